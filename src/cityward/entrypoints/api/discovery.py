"""/api/v1/discovered: devices that announced themselves, waiting for a city operator's decision."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.problems import CONFLICT, NOT_FOUND
from cityward.entrypoints.api.schemas import NO_CONTROL, DeviceOut, UtcDateTime, _Out
from cityward.services import discovery

router = APIRouter(prefix="/discovered", tags=["discovery"])
DeviceId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]


class DiscoveredOut(_Out):
    device_id: str
    status: str
    source: str
    address: str | None
    kind: str | None
    brand: str | None
    model: str | None
    serial: str | None
    mac: str | None
    firmware_version: str | None
    first_seen: UtcDateTime
    last_seen: UtcDateTime
    announcements: int
    decided_by: str | None
    reason: str | None


class ApproveIn(BaseModel):
    zone: str = Field(min_length=1, max_length=100, pattern=NO_CONTROL)


class RejectIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=NO_CONTROL)


@router.get("", response_model=list[DiscoveredOut])
def list_discovered(
    platform: PlatformDep, caller: CallerDep,
    status: Annotated[Literal["pending", "approved", "rejected", "all"], Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[DiscoveredOut]:
    """Devices not in the inventory that announced themselves or answered a probe (city only)."""
    items = discovery.list_discovered(platform.uow, caller, None if status == "all" else status, limit)
    return [DiscoveredOut.model_validate(d) for d in items]


@router.post("/{device_id}/approve", response_model=DeviceOut, responses={**NOT_FOUND, **CONFLICT})
def approve(platform: PlatformDep, caller: CallerDep, device_id: DeviceId, body: ApproveIn) -> DeviceOut:
    """Enter the device into the inventory in `zone` (city operators and admins)."""
    return DeviceOut.model_validate(discovery.approve(platform.uow, caller, device_id, body.zone))


@router.post("/{device_id}/reject", response_model=DiscoveredOut, responses={**NOT_FOUND, **CONFLICT})
def reject(platform: PlatformDep, caller: CallerDep, device_id: DeviceId, body: RejectIn) -> DiscoveredOut:
    """Refuse the device; it stays refused if it announces itself again."""
    return DiscoveredOut.model_validate(discovery.reject(platform.uow, caller, device_id, body.reason))
