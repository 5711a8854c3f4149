"""The product catalog: labeled products, their true origin through relabels, support dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityward.adapters.inventory_files import FileFormat, Layout, open_inventory
from cityward.adapters.storage.models import DeviceRow, ProductRow
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain.access import device_scope, require_catalog_write
from cityward.domain.catalog import (
    CATALOG_COLUMNS,
    CATALOG_REQUIRED,
    CatalogRecord,
    guess_scheme,
    parse_catalog_row,
)
from cityward.domain.organizations import Caller, OrgKind
from cityward.domain.products import CatalogEntry, OriginStatus, product_key, resolve_origins
from cityward.errors import InvalidInput, NotFound, PermissionDenied, Problem

CATALOG = Layout(CATALOG_COLUMNS, CATALOG_REQUIRED)
MAX_CATALOG_ROWS = 100_000


@dataclass(frozen=True)
class ProductView:
    id: int
    brand: str
    model: str
    kind: str | None
    origin_status: str
    manufacturer: str  # true manufacturer (end of the relabel chain)
    origin_model: str
    chain: list[str]  # "Brand Model" from this product to its origin
    end_of_support: date | None
    min_firmware: str | None
    version_scheme: str
    devices: int
    upgrade_minutes: float | None = None  # declared firmware upgrade duration (rollout timeouts)
    platform: str | None = None  # firmware platform it runs: advisories about it apply


def recompute_origins(session: Session) -> None:
    """Refresh every product's denormalized origin after a catalog change (catalogs are small)."""
    rows = session.scalars(select(ProductRow)).all()
    entries = {
        r.id: CatalogEntry(r.brand, r.model, r.relabel_of_id, OriginStatus(r.origin_status))
        for r in rows
    }
    origins = resolve_origins(entries)
    for r in rows:
        o = origins[r.id]
        key = product_key(o.brand, o.model)[0]
        if (r.origin_brand, r.origin_model, r.origin_depth) != (o.brand, o.model, len(o.chain) - 1):
            r.origin_brand, r.origin_model, r.origin_brand_key = o.brand, o.model, key
            r.origin_depth = len(o.chain) - 1


def _find(session: Session, brand: str, model: str) -> ProductRow | None:
    bk, mk = product_key(brand, model)
    return session.scalars(
        select(ProductRow).where(ProductRow.brand_key == bk, ProductRow.model_key == mk)
    ).first()


def _check_declarer(caller: Caller, record: CatalogRecord) -> None:
    """A manufacturer declares only its own brand's products; distributors and the city any."""
    if caller.org_kind is OrgKind.MANUFACTURER:
        own = product_key(caller.brand or caller.org_name, "")[0]
        if product_key(record.brand, "")[0] != own:
            raise PermissionDenied(f"a manufacturer declares only products of its brand "
                                   f"({caller.brand or caller.org_name!r})")


def _apply(uow: UnitOfWork, caller: Caller, rec: CatalogRecord) -> ProductRow:
    s = uow.session
    now = uow.clock()
    row = _find(s, rec.brand, rec.model)
    before = _snapshot(row) if row else None
    if row is None:
        bk, mk = product_key(rec.brand, rec.model)
        row = ProductRow(brand=rec.brand, model=rec.model, brand_key=bk, model_key=mk,
                         origin_status=OriginStatus.UNKNOWN.value, origin_brand=rec.brand,
                         origin_model=rec.model, origin_brand_key=bk, origin_depth=0,
                         version_scheme=(rec.version_scheme or "dotted"), created_at=now,
                         updated_at=now)
        s.add(row)
    if rec.kind:
        row.kind = rec.kind
    if rec.end_of_support:
        row.end_of_support = rec.end_of_support
    if rec.min_firmware:
        row.min_firmware = rec.min_firmware
        if not rec.version_scheme and before is None:
            row.version_scheme = guess_scheme(rec.min_firmware).value
    if rec.version_scheme:
        row.version_scheme = rec.version_scheme
    if rec.upgrade_minutes is not None:
        row.upgrade_minutes = rec.upgrade_minutes
    if rec.platform is not None:
        row.platform = rec.platform
    if rec.origin_brand and rec.origin_model:
        if product_key(rec.origin_brand, rec.origin_model) == product_key(rec.brand, rec.model):
            row.relabel_of_id = None
            row.origin_status = OriginStatus.ORIGINAL.value
        else:
            origin = _find(s, rec.origin_brand, rec.origin_model)
            if origin is None:
                raise NotFound(f"origin product {rec.origin_brand} {rec.origin_model} is not in "
                               "the catalog; declare it first (or earlier in the same file)")
            s.flush()
            row.relabel_of_id = origin.id
            row.origin_status = OriginStatus.RELABELED.value
    row.updated_at = now
    s.flush()
    after = _snapshot(row)
    if after != before:
        uow.record(caller, "products.created" if before is None else "products.updated",
                   "product", row.id, before=before, after=after)
    return row


def _snapshot(row: ProductRow) -> dict[str, Any]:
    return {
        "brand": row.brand, "model": row.model, "kind": row.kind,
        "origin_status": row.origin_status, "relabel_of_id": row.relabel_of_id,
        "end_of_support": row.end_of_support.isoformat() if row.end_of_support else None,
        "min_firmware": row.min_firmware, "version_scheme": row.version_scheme,
        "upgrade_minutes": row.upgrade_minutes, "platform": row.platform,
    }


def save_product(uow_factory: UnitOfWorkFactory, caller: Caller, raw: dict[str, Any]) -> ProductView:
    """Create or update one product (by brand + model) with the catalog file's rules."""
    require_catalog_write(caller)
    parsed = parse_catalog_row(raw, 1)
    if not isinstance(parsed, CatalogRecord):
        raise InvalidInput("bad product", [Problem(p.message, field=p.field) for p in parsed])
    _check_declarer(caller, parsed)
    with uow_factory(write=True) as uow:
        row = _apply(uow, caller, parsed)
        recompute_origins(uow.session)
        uow.commit()
        pid = row.id
    return get_product(uow_factory, caller, pid)


def import_catalog(
    uow_factory: UnitOfWorkFactory, caller: Caller, stream: BinaryIO, source: str, fmt: FileFormat
) -> int:
    """All-or-nothing import of a catalog file; origins may point to rows earlier in the file."""
    require_catalog_write(caller)
    reader = open_inventory(stream, source, fmt, layout=CATALOG)
    records: list[tuple[int, CatalogRecord]] = []
    problems: list[Problem] = []
    for row, raw in reader.rows:
        if len(records) + len(problems) >= MAX_CATALOG_ROWS:
            raise InvalidInput(f"{source}: more than {MAX_CATALOG_ROWS} products; split the file")
        if "__problem__" in raw:
            problems.append(Problem(raw["__problem__"], row=row, source=source))
            continue
        parsed = parse_catalog_row(raw, row)
        if isinstance(parsed, CatalogRecord):
            records.append((row, parsed))
        else:
            problems.extend(Problem(p.message, p.row, p.field, source) for p in parsed)
    if not records and not problems:
        raise InvalidInput(f"{source}: the file has a header but no products")
    if problems:
        raise InvalidInput(f"{source}: the catalog has bad rows; nothing was imported", problems[:200],
                           more=max(len(problems) - 200, 0))
    with uow_factory(write=True) as uow:
        for row, rec in records:
            try:
                _check_declarer(caller, rec)
                _apply(uow, caller, rec)
            except (NotFound, PermissionDenied) as exc:
                raise InvalidInput(f"{source}: nothing was imported",
                                   [Problem(exc.message, row=row, field="brand", source=source)]) from None
        recompute_origins(uow.session)
        uow.commit()
    return len(records)


def _views(session: Session, caller: Caller, rows: list[ProductRow]) -> list[ProductView]:
    by_id = {r.id: r for r in session.scalars(select(ProductRow))}
    counts = dict(session.execute(
        select(DeviceRow.product_id, func.count())
        .where(scope_clause(session, device_scope(caller)))
        .group_by(DeviceRow.product_id)
    ).all())
    views = []
    for r in rows:
        chain: list[str] = []
        cur: ProductRow | None = r
        while cur is not None and len(chain) < 64:
            chain.append(f"{cur.brand} {cur.model}")
            cur = by_id.get(cur.relabel_of_id) if cur.relabel_of_id else None
        views.append(ProductView(
            r.id, r.brand, r.model, r.kind, r.origin_status, r.origin_brand, r.origin_model,
            chain, r.end_of_support, r.min_firmware, r.version_scheme, counts.get(r.id, 0), r.upgrade_minutes,
            r.platform,
        ))
    return views


def list_products(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    *,
    manufacturer: str | None = None,
    origin_status: str | None = None,
) -> list[ProductView]:
    with uow_factory() as uow:
        q = select(ProductRow).order_by(ProductRow.brand_key, ProductRow.model_key)
        if manufacturer:
            q = q.where(ProductRow.origin_brand_key == product_key(manufacturer, "")[0])
        if origin_status:
            q = q.where(ProductRow.origin_status == origin_status.lower())
        return _views(uow.session, caller, list(uow.session.scalars(q)))


def get_product(uow_factory: UnitOfWorkFactory, caller: Caller, product: int | tuple[str, str]) -> ProductView:
    if isinstance(product, int) and not 0 < product < 2**31:
        raise NotFound(f"product {product!r} not found")
    with uow_factory() as uow:
        row = (uow.session.get(ProductRow, product) if isinstance(product, int)
               else _find(uow.session, *product))
        if row is None:
            raise NotFound(f"product {product!r} not found")
        return _views(uow.session, caller, [row])[0]
