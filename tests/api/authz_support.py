"""A small city with one organization of every kind, and README's "Who sees what" table read as data.

The authorization tests take their expectations from the README table (the documented rule is the
specification), send one request per role x organization kind x operation, and compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from tests.helpers import import_csv

from cityward.adapters.storage.models import AuditEventRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import organizations, policies, rollouts, tokens, users, zones
from cityward.services.inventory import DeviceFilter

README = Path(__file__).resolve().parents[2] / "README.md"
CITY = "Springfield"
# One organization per kind; "Beta" is a second integrator whose device nobody else may touch.
ORGS: dict[OrgKind, str] = {
    OrgKind.CITY: CITY, OrgKind.INTEGRATOR: "Alpha", OrgKind.INSTALLER: "Inst", OrgKind.DISTRIBUTOR: "Dist",
    OrgKind.CONSULTANT: "Cons", OrgKind.MANUFACTURER: "Acme", OrgKind.RESEARCHER: "Res",
}
ROLES = (Role.ADMIN, Role.OPERATOR, Role.VIEWER)
DEVICE_HEADER = "id,kind,brand,model,firmware_version,zone,protocol,installer,maintainer,supplier"
# A device row naming every partner in its column: any writer's claim holds for it.
DEVICE_ROW = "d1,streetlight,Acme,AL-100,1.0.0,Downtown,mqtt,Inst,Alpha,Dist"
POLICY = """
name: matrix policy
rules:
  - id: SEEN-002
    title: Never reported
    rationale: r
    severity: medium
    condition: online is null
    controls: {nist_ir_8259a: [cybersecurity_state_awareness]}
    remediation: inspect
"""


@dataclass
class Member:
    """One role of one organization: its API token, its sacrificial token and device, its login."""

    kind: OrgKind
    role: Role
    token: str
    spare_token: str  # for DELETE /tokens/{id}: a token of its own organization
    spare_device: str  # for DELETE /devices/{id}: a device every partner holds a duty for
    username: str
    password: str

    @property
    def slug(self) -> str:
        return f"{self.kind.value}-{self.role.value}"

    @property
    def org(self) -> str:
        return ORGS[self.kind]


@dataclass
class World:
    platform: Platform
    city: Caller
    members: list[Member]
    rollout_id: int  # created by the integrator's operator, on d1
    city_rollout_id: int  # created by the city, on c1 in a critical zone: it awaits approval
    waiver_id: int  # requested by the integrator's operator
    audit_run_id: int  # the city's
    extra: dict[str, str] = field(default_factory=dict)


def audit_events(platform: Platform) -> int:
    with platform.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(AuditEventRow)) or 0


def caller_of(platform: Platform, member: Member) -> Caller:
    return tokens.authenticate(platform.uow, member.token)


def build_world(platform: Platform, city: Caller, *, sign_ins: bool = True) -> World:
    """Every organization kind with an admin, an operator and a viewer (token and dashboard user)."""
    uow = platform.uow
    for kind, name in ORGS.items():
        if kind is not OrgKind.CITY:
            brand = "Acme" if kind is OrgKind.MANUFACTURER else None
            organizations.create_org(uow, city, name, kind.value, brand=brand)
    organizations.create_org(uow, city, "Beta", "integrator")
    zones.create_zone(uow, city, "Downtown")
    zones.create_zone(uow, city, "Core", "critical")  # the city's rollout there waits for an approval
    rows = [DEVICE_ROW, "c1,streetlight,Acme,AL-100,1.0.0,Core,mqtt,Inst,Alpha,Dist",
            "b1,streetlight,Acme,AL-100,1.0.0,Downtown,mqtt,,Beta,"]
    members: list[Member] = []
    spares = []
    for kind in ORGS:
        for role in ROLES:
            spare = f"x-{kind.value}-{role.value}"
            spares.append(spare)
            rows.append(f"{spare},streetlight,Acme,AL-100,1.0.0,Downtown,mqtt,Inst,Alpha,Dist")
    import_csv(platform, city, ("\n".join([DEVICE_HEADER, *rows]) + "\n").encode(), create_missing=True)
    for kind, name in ORGS.items():
        for role in ROLES:
            token = tokens.create_token(uow, city, name, f"{kind.value} {role.value}", role.value).secret
            spare = tokens.create_token(uow, city, name, f"spare {kind.value} {role.value}", "viewer").view.id
            username = f"{kind.value}.{role.value}"
            password = f"pw-{kind.value}-{role.value}-correct-horse"
            if sign_ins:
                users.create_user(uow, city, username, name, role.value, password=password)
            members.append(Member(kind, role, token, spare, f"x-{kind.value}-{role.value}", username, password))
    alpha = next(caller_of(platform, m) for m in members if m.kind is OrgKind.INTEGRATOR and m.role is Role.OPERATOR)
    store = Path(platform.settings.firmware_dir)
    rid, _ = rollouts.create(uow, alpha, rollouts.RolloutRequest(
        "alpha reboot", Operation.REBOOT, rollouts.Target(DeviceFilter(), device_ids=("d1",)),
        WaveOptions(canary=0, percentages=(100,))), store)
    cid, _ = rollouts.create(uow, city, rollouts.RolloutRequest(
        "city reboot", Operation.REBOOT, rollouts.Target(DeviceFilter(), device_ids=("c1",)),
        WaveOptions(canary=0, percentages=(100,))), store)
    waiver = policies.request_waiver(uow, alpha, "SEEN-002", {"device": "d1"}, "being replaced",
                                     datetime.now(UTC) + timedelta(days=10))
    policies.publish(uow, city, POLICY.encode(), "matrix.yaml")
    from cityward.services import audit

    chosen = policies.policy_to_audit(uow)
    run = audit.run_audit(uow, city, chosen.policy, chosen.text, version=chosen.version)
    return World(platform, city, members, rid, cid, waiver.id, run.run_id)


# --- README's table --------------------------------------------------------------------------------

_KIND_COLUMNS = {"city": OrgKind.CITY, "integrator": OrgKind.INTEGRATOR, "installer": OrgKind.INSTALLER,
                 "distributor": OrgKind.DISTRIBUTOR, "consultant": OrgKind.CONSULTANT,
                 "manufacturer": OrgKind.MANUFACTURER, "researcher": OrgKind.RESEARCHER}
_LEVEL = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def readme_rules() -> dict[str, dict[OrgKind, Role | None]]:
    """Action → organization kind → the least role that may do it (None: no role may)."""
    text = README.read_text()
    section = text.split("## Who sees what", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "action", header
    kinds = [_KIND_COLUMNS[h] for h in header[1:8]]
    rules: dict[str, dict[OrgKind, Role | None]] = {}
    for line in lines[1:]:  # the |---| line does not start with "| "
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        action = re.sub(r"`", "", cells[0])
        row: dict[OrgKind, Role | None] = {}
        for kind, cell in zip(kinds, cells[1:8], strict=True):
            word = re.sub(r"[^a-z—-]", "", cell.split("(")[0].split(" ")[0].lower())
            row[kind] = None if word in ("—", "-", "") else Role(word)
        rules[action] = row
    return rules


def allowed(rules: dict[str, dict[OrgKind, Role | None]], action: str, kind: OrgKind, role: Role) -> bool:
    least = rules[action][kind]
    return least is not None and _LEVEL[role] >= _LEVEL[least]
