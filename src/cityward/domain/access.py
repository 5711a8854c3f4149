"""Who may see and change what: the shared-responsibility rules, as data the storage enforces.

The city sees and changes its whole fleet. Integrators and installers see and change the
devices they hold any duty for; distributors see what they supplied and may declare supplies;
manufacturers see only counts of their own products (by true origin, through relabels);
consultants read the fleet and never write; researchers see no devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.responsibility import Duty
from cityward.errors import PermissionDenied


class Reach(StrEnum):
    ALL = "all"
    RESPONSIBLE = "responsible"  # devices where the org holds one of `duties`
    MANUFACTURED = "manufactured"  # devices whose true manufacturer is the org's brand
    NONE = "none"


@dataclass(frozen=True)
class DeviceScope:
    reach: Reach
    org_id: int | None = None
    duties: frozenset[Duty] = frozenset()
    brand: str | None = None
    details: bool = True  # False: aggregate counts only


def device_scope(caller: Caller) -> DeviceScope:
    kind = caller.org_kind
    if kind in (OrgKind.CITY, OrgKind.CONSULTANT):
        return DeviceScope(Reach.ALL)
    if kind in (OrgKind.INTEGRATOR, OrgKind.INSTALLER):
        return DeviceScope(Reach.RESPONSIBLE, caller.org_id, frozenset(Duty))
    if kind is OrgKind.DISTRIBUTOR:
        return DeviceScope(Reach.RESPONSIBLE, caller.org_id, frozenset({Duty.SUPPLY}))
    if kind is OrgKind.MANUFACTURER and caller.brand:
        return DeviceScope(Reach.MANUFACTURED, brand=caller.brand, details=False)
    return DeviceScope(Reach.NONE, details=False)


def require_device_details(caller: Caller) -> DeviceScope:
    scope = device_scope(caller)
    if not scope.details:
        raise PermissionDenied(
            f"a {caller.org_kind} organization sees device counts, not individual devices",
            hint="use `cityward devices summary` (GET /api/v1/devices/summary)",
        )
    return scope


def require_device_write(caller: Caller) -> DeviceScope:
    """Writers: the city, integrators, installers and distributors, as operator or admin."""
    if caller.role is Role.VIEWER:
        raise PermissionDenied("a viewer (token or user) cannot change devices")
    if caller.org_kind not in (
        OrgKind.CITY, OrgKind.INTEGRATOR, OrgKind.INSTALLER, OrgKind.DISTRIBUTOR
    ):
        raise PermissionDenied(f"a {caller.org_kind} organization cannot change devices")
    return device_scope(caller)


# The inventory columns a non-city writer must name itself in, for each row it imports.
CLAIM_COLUMNS: dict[OrgKind, tuple[str, ...]] = {
    OrgKind.INTEGRATOR: ("installer", "maintainer"),
    OrgKind.INSTALLER: ("installer", "maintainer"),
    OrgKind.DISTRIBUTOR: ("supplier",),
}


def require_city_admin(caller: Caller, what: str) -> None:
    if not caller.is_city_admin:
        raise PermissionDenied(f"only a city administrator may {what}")


def require_catalog_write(caller: Caller) -> None:
    """The city curates the catalog; distributors and manufacturers declare their products."""
    if caller.role is Role.VIEWER or caller.org_kind not in (
        OrgKind.CITY, OrgKind.DISTRIBUTOR, OrgKind.MANUFACTURER
    ):
        raise PermissionDenied("only the city, distributors and manufacturers edit the catalog")


def require_token_admin(caller: Caller, org_id: int) -> None:
    """An organization's admin manages its own tokens; the city admin manages everyone's."""
    if caller.is_city_admin:
        return
    if caller.role is not Role.ADMIN or caller.org_id != org_id:
        raise PermissionDenied("only an administrator of that organization may manage its tokens")


def require_city_operator(caller: Caller, what: str) -> None:
    """City staff who run the fleet day to day (operator or admin), not partners or viewers."""
    if not caller.is_city or caller.role is Role.VIEWER:
        raise PermissionDenied(f"only a city operator or administrator may {what}")
