"""/api/v1/products: the catalog, each labeled product with its true origin through relabels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.pages import After, Limit, paginate
from cityward.entrypoints.api.problems import NOT_FOUND
from cityward.entrypoints.api.schemas import NO_CONTROL, ProductIn, ProductOut, ProductPageOut
from cityward.services import catalog
from cityward.services.catalog import ProductView

router = APIRouter(prefix="/products", tags=["products"])

_MAX_ID = 2**31 - 1  # the column is a 32-bit integer; larger ids cannot exist


def _key(p: ProductView) -> tuple[str, str, int]:
    return (p.brand.casefold(), p.model.casefold(), p.id)


@router.get("", response_model=ProductPageOut)
def list_products(
    platform: PlatformDep,
    caller: CallerDep,
    manufacturer: Annotated[str | None, Query(
        max_length=128, pattern=NO_CONTROL, description="true manufacturer")] = None,
    origin_status: Annotated[str | None, Query(
        max_length=16, pattern=NO_CONTROL, description="original, relabeled or unknown")] = None,
    limit: Limit = 100,
    after: After = None,
) -> ProductPageOut:
    found = catalog.list_products(platform.uow, caller, manufacturer=manufacturer,
                                  origin_status=origin_status)
    page, total, next_after = paginate(found, _key, limit, after)
    return ProductPageOut(items=[ProductOut.model_validate(p) for p in page], total=total,
                          next_after=next_after)


@router.get("/{product_id}", response_model=ProductOut, responses=NOT_FOUND)
def get_product(
    platform: PlatformDep,
    caller: CallerDep,
    product_id: Annotated[int, Path(ge=1, le=_MAX_ID)],
) -> ProductOut:
    return ProductOut.model_validate(catalog.get_product(platform.uow, caller, product_id))


@router.post("", response_model=ProductOut, responses=NOT_FOUND)
def save_product(platform: PlatformDep, caller: CallerDep, product: ProductIn) -> ProductOut:
    """Create or update the product with this brand and model (a catalog row's rules).

    With origin_brand and origin_model it is a relabel of that product, which must exist.
    """
    raw = product.model_dump(exclude_none=True)
    return ProductOut.model_validate(catalog.save_product(platform.uow, caller, raw))
