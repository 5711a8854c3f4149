"""Publishing a policy to the partners, their acknowledgements, and waivers.

A published version is immutable and numbered; the newest is in force. Every partner
organization acknowledges the version in force; the audit lists who has not. A waiver exempts a
device (or a selector) from one rule for a while; it needs a reason and an approver who is not
the requester, and it stops applying when it expires.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import cityward
from cityward.adapters.storage.models import DeviceRow, OrganizationRow, PolicyAckRow, PolicyVersionRow, WaiverRow
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, device_scope, require, require_city_admin
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.policy.document import Policy, parse_policy
from cityward.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Problem


def baseline_path() -> Path:
    """The shipped baseline: inside the installed package, or at the top of a source checkout."""
    packaged = Path(cityward.__file__).parent / "policies" / "baseline.yaml"
    return packaged if packaged.exists() else Path(cityward.__file__).parents[2] / "policies" / "baseline.yaml"


SELECTOR_KEYS = ("device", "zone", "kind", "product", "tag")
# Partners expected to acknowledge a policy: those who act on devices.
ACKNOWLEDGING = (OrgKind.INTEGRATOR, OrgKind.INSTALLER, OrgKind.DISTRIBUTOR, OrgKind.CONSULTANT,
                 OrgKind.MANUFACTURER)


@dataclass(frozen=True)
class PublishedPolicy:
    number: int
    name: str
    sha256: str
    published_at: datetime
    published_by: str
    policy: Policy
    text: bytes


def publish(uow_factory: UnitOfWorkFactory, caller: Caller, text: bytes, source: str) -> PublishedPolicy:
    require_city_admin(caller, "publish a policy")
    policy = parse_policy(text, source)  # a policy that does not validate is never published
    digest = hashlib.sha256(text).hexdigest()
    with uow_factory(write=True) as uow:
        current = _in_force_number(uow.session)
        latest = uow.session.get(PolicyVersionRow, current) if current is not None else None
        if latest is not None and latest.sha256 == digest:
            raise Conflict(f"this policy is already published as version {latest.number}")
        number = (latest.number if latest else 0) + 1
        row = PolicyVersionRow(number=number, name=policy.name, sha256=digest, text=text.decode("utf-8"),
                               published_at=uow.clock(), published_by=caller.actor)
        uow.session.add(row)
        uow.record(caller, "policy.published", "policy", str(number), after={
            "name": policy.name, "sha256": digest, "rules": len(policy.rules)})
        uow.commit()
        return PublishedPolicy(number, policy.name, digest, row.published_at, caller.actor, policy, text)


def _in_force_number(session: Session) -> int | None:
    return session.scalar(select(func.max(PolicyVersionRow.number)))


def in_force(uow_factory: UnitOfWorkFactory) -> PublishedPolicy | None:
    with uow_factory() as uow:
        number = _in_force_number(uow.session)
        if number is None:
            return None
        row = uow.session.get(PolicyVersionRow, number)
        assert row is not None
        text = row.text.encode("utf-8")
        return PublishedPolicy(row.number, row.name, row.sha256, row.published_at, row.published_by,
                               parse_policy(text, f"policy version {row.number}"), text)


@dataclass(frozen=True)
class AuditPolicy:
    policy: Policy
    text: bytes
    version: int | None  # None: not a published version


def policy_to_audit(uow_factory: UnitOfWorkFactory, path: Path | None = None) -> AuditPolicy:
    """The policy an audit uses: the file given, else the version in force (as the partners
    acknowledged it), else the shipped baseline."""
    if path is None:
        current = in_force(uow_factory)
        if current is not None:
            return AuditPolicy(current.policy, current.text, current.number)
    policy, text = read_policy_file(path or baseline_path())
    return AuditPolicy(policy, text, None)


def read_policy_file(path: Path) -> tuple[Policy, bytes]:
    """A policy file, checked; InvalidInput names the file and every problem."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    return parse_policy(text, str(path)), text


def acknowledge(uow_factory: UnitOfWorkFactory, caller: Caller, version: int | None = None) -> int:
    """The caller's organization acknowledges a version (default: the one in force)."""
    if caller.role is Role.VIEWER:
        raise PermissionDenied("a viewer cannot acknowledge a policy for its organization")
    require(caller, Action.ACKNOWLEDGE)  # partners acknowledge the city's policy; the city publishes it
    with uow_factory(write=True) as uow:
        number = version or _in_force_number(uow.session)
        if number is None or uow.session.get(PolicyVersionRow, number) is None:
            raise NotFound(f"policy version {number} is not published" if number else "no policy is published yet")
        if uow.session.get(PolicyAckRow, (number, caller.org_id)) is not None:
            raise Conflict(f"{caller.org_name} already acknowledged version {number}")
        uow.session.add(PolicyAckRow(version=number, org_id=caller.org_id, acked_at=uow.clock(),
                                     acked_by=caller.actor))
        uow.record(caller, "policy.acknowledged", "policy", str(number), after={"org": caller.org_name})
        uow.commit()
        return number


def unacknowledged(uow_factory: UnitOfWorkFactory, version: int) -> list[str]:
    """Partner organizations that have not acknowledged `version`."""
    with uow_factory() as uow:
        acked = set(uow.session.scalars(select(PolicyAckRow.org_id).where(PolicyAckRow.version == version)))
        return sorted(name for oid, name in uow.session.execute(
            select(OrganizationRow.id, OrganizationRow.name)
            .where(OrganizationRow.kind.in_([k.value for k in ACKNOWLEDGING]))) if oid not in acked)


@dataclass(frozen=True)
class Acknowledgement:
    org: str
    kind: str
    acked_at: datetime | None  # None: not acknowledged yet
    acked_by: str | None


@dataclass(frozen=True)
class AcknowledgementStatus:
    version: int
    name: str
    published_at: datetime
    partners: list[Acknowledgement]  # not acknowledged first

    @property
    def pending(self) -> int:
        return sum(1 for p in self.partners if p.acked_at is None)


def acknowledgement_status(uow_factory: UnitOfWorkFactory, caller: Caller) -> AcknowledgementStatus | None:
    """Who acknowledged the version in force (None: nothing published). The city sees every partner
    expected to acknowledge it; a partner sees its own organization only."""
    with uow_factory() as uow:
        s = uow.session
        number = _in_force_number(s)
        if number is None:
            return None
        version = s.get(PolicyVersionRow, number)
        assert version is not None
        q = (select(OrganizationRow.name, OrganizationRow.kind, PolicyAckRow.acked_at, PolicyAckRow.acked_by)
             .outerjoin(PolicyAckRow, (PolicyAckRow.org_id == OrganizationRow.id) & (PolicyAckRow.version == number))
             .where(OrganizationRow.kind.in_([k.value for k in ACKNOWLEDGING])))
        if not caller.is_city:
            q = q.where(OrganizationRow.id == caller.org_id)
        partners = [Acknowledgement(name, kind, at, by) for name, kind, at, by in s.execute(q)]
    partners.sort(key=lambda p: (p.acked_at is not None, p.org.casefold()))
    return AcknowledgementStatus(number, version.name, version.published_at, partners)


# --- waivers --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WaiverView:
    id: int
    rule_id: str
    selector: dict[str, str]
    reason: str
    requested_by: str
    expires_at: datetime
    status: str
    decided_by: str | None


def _view(r: WaiverRow) -> WaiverView:
    return WaiverView(r.id, r.rule_id, dict(r.selector), r.reason, r.requested_by, r.expires_at, r.status,
                      r.decided_by)


def request_waiver(uow_factory: UnitOfWorkFactory, caller: Caller, rule_id: str, selector: dict[str, str],
                   reason: str, expires_at: datetime) -> WaiverView:
    """Ask for an exception; a city administrator other than the requester decides. A partner asks
    only for one device it holds a duty for: an exception for a zone, a kind, a product or a tag
    reaches other organizations' devices, and another organization's device is not its to excuse."""
    require(caller, Action.WAIVER)
    problems = []
    if len(selector) != 1 or next(iter(selector)) not in SELECTOR_KEYS:
        problems.append(Problem(f"exactly one of {', '.join(SELECTOR_KEYS)}", field="selector"))
    if not reason.strip() or len(reason) > 1000:
        problems.append(Problem("a reason of 1-1000 characters is required", field="reason"))
    expires = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if expires <= datetime.now(UTC):
        problems.append(Problem("must be in the future", field="expires_at"))
    if expires > datetime.now(UTC).replace(year=datetime.now(UTC).year + 2):
        problems.append(Problem("at most two years ahead: waivers are reviewed, not forgotten", field="expires_at"))
    if problems:
        raise InvalidInput("the waiver request is incomplete", problems)
    (key, value), = selector.items()
    if not caller.is_city and key != "device":
        raise PermissionDenied(f"a partner requests a waiver for one device it holds a duty for, not a {key}",
                               hint="use the selector device; the city requests waivers for zones, kinds, "
                                    "products and tags")
    with uow_factory(write=True) as uow:
        if not caller.is_city and uow.session.scalar(select(DeviceRow.id).where(
                DeviceRow.id == value, scope_clause(uow.session, device_scope(caller)))) is None:
            raise NotFound(f"device {value!r} not found")  # outside its scope: no hint that it exists
        row = WaiverRow(rule_id=rule_id, selector=selector, reason=reason.strip(), requested_by=caller.actor,
                        requested_org_id=caller.org_id, requested_at=uow.clock(), expires_at=expires,
                        status="requested")
        uow.session.add(row)
        uow.session.flush()
        uow.record(caller, "waiver.requested", "waiver", row.id, after={
            "rule": rule_id, "selector": selector, "reason": reason, "expires_at": expires.isoformat()})
        uow.commit()
        return _view(row)


def decide_waiver(uow_factory: UnitOfWorkFactory, caller: Caller, waiver_id: int, approve: bool) -> WaiverView:
    require_city_admin(caller, "approve or reject a waiver")  # Action.DECIDE_WAIVER
    with uow_factory(write=True) as uow:
        row = uow.session.get(WaiverRow, waiver_id)
        if row is None:
            raise NotFound(f"no waiver {waiver_id}")
        if row.status != "requested":
            raise Conflict(f"waiver {waiver_id} is already {row.status}")
        if row.requested_by == caller.actor:
            raise PermissionDenied("a waiver must be approved by someone other than its requester")
        row.status, row.decided_by, row.decided_at = ("approved" if approve else "rejected"), caller.actor, uow.clock()
        uow.record(caller, f"waiver.{row.status}", "waiver", waiver_id, after={"rule": row.rule_id})
        uow.commit()
        return _view(row)


def list_waivers(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[WaiverView]:
    with uow_factory() as uow:
        q = select(WaiverRow).order_by(WaiverRow.id)
        if not caller.is_city:
            q = q.where(WaiverRow.requested_org_id == caller.org_id)
        return [_view(r) for r in uow.session.scalars(q)]


def active_waivers(session: Session, now: datetime) -> list[WaiverRow]:
    return list(session.scalars(select(WaiverRow).where(WaiverRow.status == "approved",
                                                        WaiverRow.expires_at > now)))
