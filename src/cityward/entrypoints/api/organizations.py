"""/api/v1/orgs: the city and its partners."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.pages import After, Limit, paginate
from cityward.entrypoints.api.problems import CONFLICT
from cityward.entrypoints.api.schemas import NO_CONTROL, OrgIn, OrgOut, OrgPageOut
from cityward.services import organizations
from cityward.services.organizations import OrgView

router = APIRouter(prefix="/orgs", tags=["organizations"])


def _key(o: OrgView) -> tuple[str]:
    return (o.name,)


@router.get("", response_model=OrgPageOut)
def list_orgs(
    platform: PlatformDep,
    caller: CallerDep,
    kind: Annotated[str | None, Query(max_length=20, pattern=NO_CONTROL)] = None,
    limit: Limit = 100,
    after: After = None,
) -> OrgPageOut:
    """The city sees every organization; a partner sees itself and the city."""
    found = organizations.list_orgs(platform.uow, caller, kind)
    page, total, next_after = paginate(found, _key, limit, after)
    return OrgPageOut(items=[OrgOut.model_validate(o) for o in page], total=total,
                      next_after=next_after)


@router.post("", response_model=OrgOut, status_code=201, responses=CONFLICT)
def create_org(platform: PlatformDep, caller: CallerDep, org: OrgIn) -> OrgOut:
    view = organizations.create_org(platform.uow, caller, org.name, org.kind, brand=org.brand,
                                    contact_email=org.contact_email)
    return OrgOut.model_validate(view)
