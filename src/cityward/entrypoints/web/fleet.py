"""Dashboard pages for the fleet: the device list (the CLI's filters, keyset pages) and a device."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from cityward.entrypoints.web import audit_log
from cityward.entrypoints.web.common import SessionDep, page, platform_of
from cityward.errors import InvalidInput, NotFound, PreconditionFailed
from cityward.services import inventory, vulnerabilities

router = APIRouter(include_in_schema=False)
PER_PAGE = 50
COUNT_UP_TO = 10_000  # "more than 10,000 devices match": exact beyond that costs a scan of every match
Text = Annotated[str, Query(max_length=100)]


@router.get("/devices", response_class=HTMLResponse)
def devices(request: Request, active: SessionDep, kind: Text = "", zone: Text = "", brand: Text = "",
            manufacturer: Text = "", firmware: Text = "", org: Text = "", failing_rule: Text = "",
            online: Annotated[str, Query(pattern="^(|yes|no|never)$")] = "",
            after: Annotated[str, Query(max_length=64)] = "") -> HTMLResponse:
    chosen = {"kind": kind, "zone": zone, "brand": brand, "manufacturer": manufacturer, "firmware": firmware,
              "org": org, "failing_rule": failing_rule, "online": online}
    given = {k: v.strip() or None for k, v in chosen.items()}
    flt = inventory.DeviceFilter(kind=given["kind"], zone=given["zone"], brand=given["brand"],
                                 manufacturer=given["manufacturer"], firmware=given["firmware"], org=given["org"],
                                 failing_rule=given["failing_rule"], online={"yes": True, "no": False}.get(online),
                                 never_seen=online == "never")
    error = None
    try:
        found = inventory.list_devices(platform_of(request).uow, active.caller, flt, limit=PER_PAGE,
                                       after=after or None, count_up_to=COUNT_UP_TO)
    except (NotFound, InvalidInput, PreconditionFailed) as exc:  # e.g. a zone that does not exist, no audit yet
        found, error = inventory.Page([], 0, None), str(exc)
    query = {k: v for k, v in chosen.items() if v}
    return page(request, "devices.html", 400 if error else 200, session=active, active="devices", page=found,
                filters=chosen, error=error, first=not after,
                next_url=f"/devices?{urlencode({**query, 'after': found.next_after})}" if found.next_after else None,
                first_url=f"/devices?{urlencode(query)}")


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device(request: Request, active: SessionDep, device_id: str) -> HTMLResponse:
    platform = platform_of(request)
    shown = inventory.get_device(platform.uow, active.caller, device_id)  # NotFound outside the scope too
    vulns = vulnerabilities.device_vulnerabilities(platform.uow, active.caller, device_id)
    facts: list[tuple[str, Any]] = [
        ("kind", shown.kind), ("zone", shown.zone), ("firmware", shown.firmware_version),
        ("online", {True: "yes", False: "no", None: "never reported"}[shown.online]),
        ("last seen", shown.last_seen and f"{shown.last_seen:%Y-%m-%d %H:%M} UTC"),
        ("credentials", shown.credential_state), ("serial", shown.serial), ("MAC", shown.mac),
        ("address", shown.address), ("protocol", shown.protocol), ("end of support", shown.end_of_support)]
    history = audit_log.device_history(platform, active.caller, device_id)
    return page(request, "device.html", session=active, active="devices", device=shown, facts=facts, vulns=vulns,
                operations=history.operations, events=history.events, history_limit=audit_log.HISTORY)
