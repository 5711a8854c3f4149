"""Who must act on a device, per duty: a zone-level assignment, overridden per device."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from cityward.errors import InvalidInput


class Duty(StrEnum):
    SUPPLY = "supply"
    INSTALL = "install"
    MAINTAIN = "maintain"  # patching and upgrades
    CREDENTIALS = "credentials"
    REMOTE_ACCESS = "remote_access"


def parse_duty(text: str) -> Duty:
    try:
        return Duty(text.lower())
    except ValueError:
        raise InvalidInput(f"unknown duty {text!r}; expected one of {', '.join(Duty)}") from None


# The device column that holds the per-device override of each duty.
DEVICE_COLUMN: dict[Duty, str] = {
    Duty.SUPPLY: "supplier_id",
    Duty.INSTALL: "installer_id",
    Duty.MAINTAIN: "maintainer_id",
    Duty.CREDENTIALS: "credentials_org_id",
    Duty.REMOTE_ACCESS: "remote_access_org_id",
}


def zone_chain(zone_id: int, parents: Mapping[int, int | None]) -> list[int]:
    """The zone and its ancestors, nearest first; a cycle in bad data stops the walk."""
    chain: list[int] = []
    current: int | None = zone_id
    while current is not None and current not in chain:
        chain.append(current)
        current = parents.get(current)
    return chain


def zone_holder(
    zone_id: int,
    duty: Duty,
    parents: Mapping[int, int | None],
    zone_assignments: Mapping[tuple[int, Duty], int],
) -> int | None:
    """The organization holding `duty` for a zone: its own assignment, else its nearest parent's."""
    for z in zone_chain(zone_id, parents):
        if (z, duty) in zone_assignments:
            return zone_assignments[(z, duty)]
    return None


def zones_held(
    org_id: int,
    duty: Duty,
    parents: Mapping[int, int | None],
    zone_assignments: Mapping[tuple[int, Duty], int],
) -> set[int]:
    """Zones whose devices (without an override) fall to `org_id` for `duty`."""
    return {z for z in parents if zone_holder(z, duty, parents, zone_assignments) == org_id}


def effective_responsibility(
    overrides: Mapping[Duty, int | None],
    zone_id: int,
    parents: Mapping[int, int | None],
    zone_assignments: Mapping[tuple[int, Duty], int],
) -> dict[Duty, int | None]:
    """The organization responsible for each duty: device override, else the nearest zone's."""
    result: dict[Duty, int | None] = {}
    for duty in Duty:
        org = overrides.get(duty)
        result[duty] = org if org is not None else zone_holder(zone_id, duty, parents, zone_assignments)
    return result
