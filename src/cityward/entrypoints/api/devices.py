"""/api/v1/devices: list, show, summarize, import and export the inventory within scope."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cityward.adapters.inventory_files import FileFormat
from cityward.domain.access import require_city_admin, require_device_write
from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.pages import Limit
from cityward.entrypoints.api.problems import NOT_FOUND, TOO_LARGE
from cityward.entrypoints.api.schemas import (
    NO_CONTROL,
    DateTimeIn,
    DeviceIn,
    DeviceOut,
    DevicePageOut,
    DeviceSummaryOut,
    DeviceSummaryRowOut,
    DutyIn,
    ImportReportOut,
)
from cityward.entrypoints.api.uploads import spool_body
from cityward.errors import InvalidInput, Problem
from cityward.services import inventory
from cityward.services.inventory import DeviceFilter

router = APIRouter(prefix="/devices", tags=["devices"])

IMPORT_PATH = "/api/v1/devices/import"
_EXPORT_CHUNK = 1 << 16
_MEDIA = {FileFormat.CSV: "text/csv; charset=utf-8", FileFormat.JSON: "application/json"}

Format = Literal["csv", "json"]


def _text(description: str, max_length: int = 128) -> Any:
    return Query(max_length=max_length, pattern=NO_CONTROL, description=description)


def device_filter(
    kind: Annotated[str | None, _text("device kind, e.g. camera", 32)] = None,
    zone: Annotated[str | None, _text("zone, including the zones inside it", 100)] = None,
    brand: Annotated[str | None, _text("brand as labeled")] = None,
    manufacturer: Annotated[str | None, _text("true manufacturer, through relabels")] = None,
    firmware: Annotated[str | None, _text("exact firmware version", 64)] = None,
    org: Annotated[str | None, _text("organization holding any duty", 100)] = None,
    tag: Annotated[str | None, _text("tag", 64)] = None,
    seen_before: Annotated[DateTimeIn | None, Query(description="last seen before (UTC)")] = None,
    seen_after: Annotated[DateTimeIn | None, Query(description="last seen at or after (UTC)")] = None,
    never_seen: Annotated[bool, Query(description="only devices never seen")] = False,
    online: Annotated[bool | None, Query(description="true: reporting now; false: went offline")] = None,
    id_prefix: Annotated[str | None, _text("device ids starting with this", 64)] = None,
    failing_rule: Annotated[str | None, _text("failing this rule in your latest audit", 64)] = None,
) -> DeviceFilter:
    return DeviceFilter(
        kind=kind, zone=zone, brand=brand, manufacturer=manufacturer, firmware=firmware, org=org,
        tag=tag, seen_before=seen_before,
        seen_after=seen_after,
        never_seen=never_seen, online=online, id_prefix=id_prefix, failing_rule=failing_rule,
    )


FilterDep = Annotated[DeviceFilter, Depends(device_filter)]


@router.get("", response_model=DevicePageOut)
def list_devices(
    platform: PlatformDep,
    caller: CallerDep,
    flt: FilterDep,
    limit: Limit = 100,
    after: Annotated[str | None, _text("`next_after` of the previous page", 64)] = None,
) -> DevicePageOut:
    """Devices in the caller's scope, in id order, one page at a time."""
    page = inventory.list_devices(platform.uow, caller, flt, limit=limit, after=after)
    return DevicePageOut(
        items=[DeviceOut.model_validate(d) for d in page.items],
        total=page.total, next_after=page.next_after,
    )


@router.get("/summary", response_model=DeviceSummaryOut)
def summarize_devices(platform: PlatformDep, caller: CallerDep, flt: FilterDep) -> DeviceSummaryOut:
    """Counts by true manufacturer, model and firmware: all a manufacturer may see."""
    rows = inventory.summarize_devices(platform.uow, caller, flt)
    return DeviceSummaryOut(items=[DeviceSummaryRowOut.model_validate(r) for r in rows],
                            devices=sum(r.devices for r in rows))


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}},
                     "description": "the inventory file"}},
)
def export_devices(
    platform: PlatformDep,
    caller: CallerDep,
    flt: FilterDep,
    fmt: Annotated[Format, Query(alias="format")] = "csv",
) -> StreamingResponse:
    """The devices in scope as an inventory file that imports back unchanged.

    Written to a temporary file first, so an error is still a problem response (nothing has been
    sent yet) and the database transaction ends before a slow client starts reading.
    """
    file_format = FileFormat(fmt)
    spool: IO[str] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by _chunks
        max_size=8 << 20, mode="w+", encoding="utf-8", newline=""
    )
    try:
        count = inventory.export_devices(platform.uow, caller, spool, file_format, flt)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return StreamingResponse(
        _chunks(spool), media_type=_MEDIA[file_format],
        headers={"Content-Disposition": f'attachment; filename="devices.{fmt}"',
                 "X-Device-Count": str(count)},
    )


def _chunks(spool: IO[str]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(_EXPORT_CHUNK):
            yield chunk.encode("utf-8")


_IMPORT_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string", "description": "an inventory CSV file"}},
    # Any item: a row that is not an object is a bad row like any other, refused with the file
    # (or, with `partial`, reported in the 200 while the good rows are imported).
    "application/json": {"schema": {"type": "array", "items": {
        "description": "an inventory row: an object of column → value"}}},
}}}


@router.post("/import", response_model=ImportReportOut, responses=TOO_LARGE,
             openapi_extra=_IMPORT_BODY)
async def import_devices(
    request: Request,
    platform: PlatformDep,
    caller: CallerDep,
    fmt: Annotated[Format | None, Query(
        alias="format", description="csv or json; defaults from the Content-Type")] = None,
    partial: Annotated[bool, Query(description="import the good rows, report the bad")] = False,
    create_missing: Annotated[bool, Query(
        description="create the zones the file names (city admin); organizations are never "
                    "created by an import")] = False,
    ignore_unknown: Annotated[bool, Query(description="skip unknown columns")] = False,
    source: Annotated[str | None, _text("a name for the upload in messages and the audit log",
                                        200)] = None,
) -> ImportReportOut:
    """Upsert devices from the raw CSV or JSON file sent as the body; all-or-nothing unless
    `partial`. Bad rows are a 422 problem whose `errors` name each row and field.
    """
    file_format = _format(fmt, request.headers.get("content-type", ""))
    # The service checks these again; checking first spares a refused caller the upload.
    require_device_write(caller)
    if create_missing:
        require_city_admin(caller, "create zones while importing")
    body = await spool_body(request)
    with body:
        report = await run_in_threadpool(
            inventory.import_devices, platform.uow, caller, body,  # type: ignore[arg-type]
            source or f"upload.{file_format}", file_format, partial=partial,
            create_missing=create_missing, ignore_unknown=ignore_unknown,
        )
    return ImportReportOut.model_validate(report)


def _format(explicit: str | None, content_type: str) -> FileFormat:
    if explicit:
        return FileFormat(explicit)
    media = content_type.split(";")[0].strip().lower()
    if media in ("text/csv", "application/csv"):
        return FileFormat.CSV
    if media == "application/json" or media.endswith("+json"):
        return FileFormat.JSON
    raise InvalidInput(
        "cannot tell the file's format", [Problem("pass csv or json", field="format")],
        hint="add ?format=csv or ?format=json, or send Content-Type text/csv or application/json",
    )


@router.get("/{device_id}", response_model=DeviceOut, responses=NOT_FOUND)
def get_device(
    platform: PlatformDep,
    caller: CallerDep,
    device_id: Annotated[str, Path(max_length=64, pattern=NO_CONTROL)],
) -> DeviceOut:
    return DeviceOut.model_validate(inventory.get_device(platform.uow, caller, device_id))


@router.put("/{device_id}", response_model=DeviceOut, responses=NOT_FOUND)
def put_device(
    platform: PlatformDep,
    caller: CallerDep,
    device_id: Annotated[str, Path(max_length=64, pattern=NO_CONTROL)],
    body: DeviceIn,
) -> DeviceOut:
    """Create or update one device with the import's rules; audited with before and after."""
    raw = {"id": device_id, **body.model_dump(exclude_unset=True)}
    return DeviceOut.model_validate(inventory.save_device(platform.uow, caller, raw))


@router.delete("/{device_id}", status_code=204, responses=NOT_FOUND)
def delete_device(
    platform: PlatformDep,
    caller: CallerDep,
    device_id: Annotated[str, Path(max_length=64, pattern=NO_CONTROL)],
) -> None:
    """Remove a decommissioned device; its last record stays in the audit log."""
    inventory.delete_device(platform.uow, caller, device_id)


@router.put("/{device_id}/duties/{duty}", response_model=DeviceOut, responses=NOT_FOUND)
def put_device_duty(
    platform: PlatformDep,
    caller: CallerDep,
    device_id: Annotated[str, Path(max_length=64, pattern=NO_CONTROL)],
    duty: Annotated[str, Path(max_length=32, pattern=NO_CONTROL)],
    body: DutyIn,
) -> DeviceOut:
    """Override who holds a duty for this device (`org: null` falls back to the zone's)."""
    return DeviceOut.model_validate(
        inventory.assign_device_duty(platform.uow, caller, device_id, duty, body.org))
