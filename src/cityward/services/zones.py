"""Zones and zone-level responsibility (inherited by the zones and devices inside)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import (
    DeviceRow,
    OrganizationRow,
    ZoneResponsibilityRow,
    ZoneRow,
)
from cityward.adapters.storage.names import find_named, key_holder, rename_named
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_admin
from cityward.domain.names import NameTaken, name_key
from cityward.domain.organizations import Caller
from cityward.domain.responsibility import parse_duty
from cityward.domain.zones import Criticality, MaintenanceWindow
from cityward.errors import InvalidInput, NotFound
from cityward.services.organizations import check_name, org_id_named


@dataclass(frozen=True)
class ZoneView:
    id: int
    name: str
    criticality: str
    parent: str | None
    maintenance_window: dict[str, Any] | None
    responsibilities: dict[str, str]  # duty → organization (own assignments only)
    devices: int


def _criticality(value: str) -> Criticality:
    try:
        return Criticality(value.lower())
    except ValueError:
        raise InvalidInput(
            f"unknown criticality {value!r}; expected one of {', '.join(Criticality)}"
        ) from None


def create_zone(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    name: str,
    criticality: str = "medium",
    parent: str | None = None,
    window: MaintenanceWindow | None = None,
) -> ZoneView:
    require_city_admin(caller, "create zones")
    name = check_name(name, "zone name")
    crit = _criticality(criticality)
    if window is not None and (problems := window.problems()):
        raise InvalidInput("bad maintenance window", problems)
    with uow_factory(write=True) as uow:
        s = uow.session
        if (same := key_holder(s, ZoneRow, name_key(name))) is not None:
            raise NameTaken("zone", name, same.name)
        parent_id = None
        if parent:
            parent_row = find_named(s, ZoneRow, parent)
            if parent_row is None:
                raise NotFound(f"parent zone {parent!r} not found")
            parent_id, parent = parent_row.id, parent_row.name
        mw = window.__dict__ if window else None
        row = ZoneRow(name=name, name_key=name_key(name), criticality=crit.value, parent_id=parent_id,
                      maintenance_window=mw, created_at=uow.clock())
        s.add(row)
        s.flush()
        uow.record(caller, "zones.created", "zone", name,
                   after={"name": name, "criticality": crit.value, "parent": parent,
                          "maintenance_window": mw})
        uow.commit()
    return get_zone(uow_factory, caller, name)


def assign_duty(
    uow_factory: UnitOfWorkFactory, caller: Caller, zone: str, duty: str, org: str | None
) -> ZoneView:
    """Make `org` responsible for `duty` in `zone` and the zones inside it (None: unassign)."""
    require_city_admin(caller, "assign responsibilities")
    the_duty = parse_duty(duty)
    with uow_factory(write=True) as uow:
        s = uow.session
        zone_id = zone_id_named(s, zone)
        zone = s.get_one(ZoneRow, zone_id).name
        org_id = org_id_named(s, org)
        current = s.scalars(select(ZoneResponsibilityRow).where(
            ZoneResponsibilityRow.zone_id == zone_id, ZoneResponsibilityRow.duty == the_duty.value
        )).first()
        before = current.org_id if current else None
        if current is not None and org_id is None:
            s.delete(current)
        elif current is not None and org_id is not None:
            current.org_id = org_id
        elif org_id is not None:
            s.add(ZoneResponsibilityRow(zone_id=zone_id, duty=the_duty.value, org_id=org_id))
        uow.record(caller, "zones.duty_assigned", "zone", zone,
                   before={"duty": the_duty.value, "org_id": before},
                   after={"duty": the_duty.value, "org_id": org_id, "org": org})
        uow.commit()
    return get_zone(uow_factory, caller, zone)


def list_zones(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[ZoneView]:
    with uow_factory() as uow:
        s = uow.session
        zones = s.scalars(select(ZoneRow).order_by(ZoneRow.name)).all()
        names = {z.id: z.name for z in zones}
        orgs = dict(s.execute(select(OrganizationRow.id, OrganizationRow.name)).all())
        duties: dict[int, dict[str, str]] = {}
        for zid, duty, org in s.execute(select(
            ZoneResponsibilityRow.zone_id, ZoneResponsibilityRow.duty, ZoneResponsibilityRow.org_id
        )):
            duties.setdefault(zid, {})[duty] = orgs[org]
        counts: dict[int, int] = {}
        if caller.is_city:  # partners see the zone tree, not the city's device counts
            counts = dict(s.execute(
                select(DeviceRow.zone_id, func.count()).group_by(DeviceRow.zone_id)).all())
        return [
            ZoneView(z.id, z.name, z.criticality, names.get(z.parent_id) if z.parent_id else None,
                     z.maintenance_window, duties.get(z.id, {}), counts.get(z.id, 0))
            for z in zones
        ]


def get_zone(uow_factory: UnitOfWorkFactory, caller: Caller, name: str) -> ZoneView:
    key = name_key(name)
    for zone in list_zones(uow_factory, caller):
        if name_key(zone.name) == key:
            return zone
    raise NotFound(f"zone {name!r} not found")


def zone_id_named(session: Session, name: str) -> int:
    """The id of the zone called `name` in any case, width or spacing; NotFound if there is none."""
    row = find_named(session, ZoneRow, name)
    if row is None:
        raise NotFound(f"zone {name!r} does not exist",
                       hint=f"`cityward zones list` shows the zones; create one with "
                            f"`cityward zones add {shlex.quote(name)}`")
    return int(row.id)


def rename_zone(uow_factory: UnitOfWorkFactory, caller: Caller, name: str, new_name: str) -> ZoneView:
    """Rename a zone (imports and lookups use the new name from then on).

    `name` is matched exactly first: that is how a zone that lost its name's key in a clash
    (migration 0009, reported by `cityward doctor`) is renamed away."""
    require_city_admin(caller, "rename zones")
    new_name = check_name(new_name, "zone name")
    with uow_factory(write=True) as uow:
        row, before = rename_named(uow.session, ZoneRow, name, new_name, "zone")
        uow.record(caller, "zones.renamed", "zone", row.id, before={"name": before},
                   after={"name": new_name})
        uow.commit()
    return get_zone(uow_factory, caller, new_name)

