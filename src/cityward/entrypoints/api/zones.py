"""/api/v1/zones: where devices stand, and who holds which duty there."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from cityward.domain.zones import MaintenanceWindow
from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.pages import After, Limit, paginate
from cityward.entrypoints.api.problems import CONFLICT, NOT_FOUND
from cityward.entrypoints.api.schemas import NO_CONTROL, DutyIn, ZoneIn, ZoneOut, ZonePageOut
from cityward.services import zones
from cityward.services.zones import ZoneView

router = APIRouter(prefix="/zones", tags=["zones"])


def _key(z: ZoneView) -> tuple[str]:
    return (z.name,)


@router.get("", response_model=ZonePageOut)
def list_zones(
    platform: PlatformDep, caller: CallerDep, limit: Limit = 100, after: After = None
) -> ZonePageOut:
    page, total, next_after = paginate(zones.list_zones(platform.uow, caller), _key, limit, after)
    return ZonePageOut(items=[ZoneOut.model_validate(z) for z in page], total=total,
                       next_after=next_after)


@router.post("", response_model=ZoneOut, status_code=201, responses={**NOT_FOUND, **CONFLICT})
def create_zone(platform: PlatformDep, caller: CallerDep, zone: ZoneIn) -> ZoneOut:
    mw = zone.maintenance_window
    window = MaintenanceWindow(mw.cron, mw.duration_minutes, mw.timezone) if mw else None
    view = zones.create_zone(platform.uow, caller, zone.name, zone.criticality, zone.parent,
                             window)
    return ZoneOut.model_validate(view)


@router.put("/{name}/duties/{duty}", response_model=ZoneOut, responses=NOT_FOUND)
def assign_duty(
    platform: PlatformDep,
    caller: CallerDep,
    name: Annotated[str, Path(max_length=100, pattern=NO_CONTROL)],
    duty: Annotated[str, Path(max_length=32, pattern=NO_CONTROL)],
    body: DutyIn,
) -> ZoneOut:
    """Make `org` hold `duty` in this zone and the zones inside it; `null` unassigns."""
    return ZoneOut.model_validate(zones.assign_duty(platform.uow, caller, name, duty, body.org))
