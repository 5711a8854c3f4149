"""Who may see and change what: the shared-responsibility rules, as data the services enforce.

`RULES` is the one table of role x organization kind x action (README's "Who sees what" prints
it, and a test holds the two equal): for each action, the least role of each organization kind
that may do it. The services call `require(caller, action)` before anything else, then narrow to
the devices the caller holds a duty for (`device_scope`). The principles: least privilege; the
city decides what is risky (duties, zones, decommissioning, approvals) and partners act only on
the devices they hold a duty for; a viewer never changes state, an audit run included.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

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


class Action(StrEnum):
    """What a caller may be allowed to do; the value is README's row label."""

    SEE_DEVICES = "see devices (list, show, export)"
    SEE_COUNTS = "see device counts by product (summary)"
    SEE_SHARED = "see the catalog, zones, organizations, firmware and the policy in force; check a policy"
    SEE_OWN = "see its organization's tokens, waivers and audit-log events"
    SEE_WORK = "see audits, findings and rollouts"
    SEE_VULNS = "see advisories and the vulnerabilities of its devices"
    SEE_DISCOVERED = "see discovered devices"
    IMPORT_DEVICES = "import or save devices"
    DELETE_DEVICE = "delete a device"
    COMMAND = "send a device a command"
    HAND_OVER = "hand over device passwords"
    REVEAL = "reveal a device password"
    ROLLOUT = "plan or create a rollout"
    CONTROL = "start, pause, resume or abort a rollout"
    APPROVE_ROLLOUT = "approve a rollout"
    CONFIG = "set a desired configuration"
    AUDIT = "run an audit"
    WAIVER = "request a waiver"
    DECIDE_WAIVER = "approve or reject a waiver"
    ACKNOWLEDGE = "acknowledge the policy in force"
    PUBLISH = "publish a policy"
    CATALOG = "declare products in the catalog"
    FIRMWARE = "add firmware keys and images"
    SBOM = "attach an SBOM to firmware"
    INTEL = "import advisories, add vendor aliases, re-match the fleet, notify partners"
    CONTACT = "set where an organization is notified"
    TOKENS = "create or revoke tokens and users"
    DUTIES = "assign duties; create or rename zones and organizations"
    DISCOVERY = "approve or reject discovered devices; probe the network"
    VERIFY_LOG = "verify the audit log"
    PLATFORM = "provision the broker, check the installation, run the server processes"


_K = OrgKind
_V, _O, _A = Role.VIEWER, Role.OPERATOR, Role.ADMIN
_DETAIL_KINDS = (_K.CITY, _K.INTEGRATOR, _K.INSTALLER, _K.DISTRIBUTOR, _K.CONSULTANT)
_FIELD_KINDS = (_K.CITY, _K.INTEGRATOR, _K.INSTALLER)  # those that work on devices
_EVERY_KIND = tuple(OrgKind)


def _rule(least: Role, *kinds: OrgKind, **other: Role) -> dict[OrgKind, Role]:
    row = dict.fromkeys(kinds, least)
    row.update({_K(k): r for k, r in other.items()})
    return row


# Action → organization kind → the least role that may (a kind absent: no role of it may).
RULES: Final = MappingProxyType({
    Action.SEE_DEVICES: _rule(_V, *_DETAIL_KINDS),
    Action.SEE_COUNTS: _rule(_V, *_EVERY_KIND),
    Action.SEE_SHARED: _rule(_V, *_EVERY_KIND),
    Action.SEE_OWN: _rule(_V, *_EVERY_KIND),
    Action.SEE_WORK: _rule(_V, *_DETAIL_KINDS),
    Action.SEE_VULNS: _rule(_V, *_DETAIL_KINDS),
    Action.SEE_DISCOVERED: _rule(_V, _K.CITY),
    Action.IMPORT_DEVICES: _rule(_O, *_FIELD_KINDS, _K.DISTRIBUTOR),
    Action.DELETE_DEVICE: _rule(_O, _K.CITY),
    Action.COMMAND: _rule(_O, *_FIELD_KINDS),
    Action.HAND_OVER: _rule(_O, *_FIELD_KINDS),
    Action.REVEAL: _rule(_A, *_FIELD_KINDS),
    Action.ROLLOUT: _rule(_O, *_FIELD_KINDS),
    Action.CONTROL: _rule(_O, *_FIELD_KINDS),
    Action.APPROVE_ROLLOUT: _rule(_O, _K.CITY),
    Action.CONFIG: _rule(_O, _K.CITY),
    Action.AUDIT: _rule(_O, *_DETAIL_KINDS),
    Action.WAIVER: _rule(_O, *_FIELD_KINDS),
    Action.DECIDE_WAIVER: _rule(_A, _K.CITY),
    Action.ACKNOWLEDGE: _rule(_O, _K.INTEGRATOR, _K.INSTALLER, _K.DISTRIBUTOR, _K.CONSULTANT, _K.MANUFACTURER),
    Action.PUBLISH: _rule(_A, _K.CITY),
    Action.CATALOG: _rule(_O, _K.CITY, _K.DISTRIBUTOR, _K.MANUFACTURER),
    Action.FIRMWARE: _rule(_A, _K.CITY, manufacturer=_O),
    Action.SBOM: _rule(_O, _K.CITY, _K.MANUFACTURER),
    Action.INTEL: _rule(_O, _K.CITY),
    Action.CONTACT: _rule(_A, *_EVERY_KIND),
    Action.TOKENS: _rule(_A, *_EVERY_KIND),
    Action.DUTIES: _rule(_A, _K.CITY),
    Action.DISCOVERY: _rule(_O, _K.CITY),
    Action.VERIFY_LOG: _rule(_A, _K.CITY),
    Action.PLATFORM: _rule(_A, _K.CITY),
})
_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def may(caller: Caller, action: Action) -> bool:
    """Whether the caller's role in its kind of organization allows `action` at all (the service
    still narrows to the devices, rollouts or organization it may touch)."""
    least = RULES[action].get(caller.org_kind)
    return least is not None and _RANK[caller.role] >= _RANK[least]


def require(caller: Caller, action: Action) -> None:
    """Refuse (PermissionDenied, HTTP 403, exit 1) before anything is read or written."""
    if may(caller, action):
        return
    who = "; ".join(f"{kind} {role}" + ("" if role is Role.ADMIN else " or above")
                    for kind, role in RULES[action].items())
    article = "an" if caller.org_kind.value[0] in "aeiou" else "a"
    raise PermissionDenied(f"{article} {caller.org_kind} {caller.role} may not {action.value.split(' (')[0]}",
                           hint=f"allowed: {who} (README, \"Who sees what\")")


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


def require_device_write(caller: Caller, action: Action = Action.IMPORT_DEVICES) -> DeviceScope:
    """`require(caller, action)` for an action on devices; the devices the caller may touch."""
    if caller.role is Role.VIEWER:
        raise PermissionDenied("a viewer (token or user) cannot change devices",
                               hint="a viewer only reads; ask an operator of your organization")
    require(caller, action)
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
    if not may(caller, Action.CATALOG):
        raise PermissionDenied("only the city, distributors and manufacturers edit the catalog",
                               hint="as an operator or administrator")


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
