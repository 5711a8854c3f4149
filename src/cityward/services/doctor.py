"""`cityward doctor`: what earlier versions left behind that today's rules would have refused.

- organizations an inventory import created with a kind it guessed from the column that named
  them (an `owner` became a second city and saw the whole fleet), until a person states the
  kind (`cityward orgs set-kind`);
- more than one organization of kind city (only `init` makes the city);
- zones, organizations and products whose names clash under `domain.names.name_key`, kept apart
  by migration 0009 (the oldest holds the name; see that migration for why nothing was merged).
Read-only: each finding names the command that resolves it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import (
    AuditEventRow,
    DeviceRow,
    OrganizationRow,
    ProductRow,
    ZoneResponsibilityRow,
    ZoneRow,
)
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_admin
from cityward.domain.names import CLASH_MARK, is_clash_key, name_key
from cityward.domain.organizations import Caller, OrgKind
from cityward.services.organizations import PARTNER_KINDS, city_org


@dataclass(frozen=True)
class Finding:
    check: str  # guessed_kind, extra_city, name_clash
    subject: str  # what it is about, e.g. "organization 'Harbour Partners'"
    problem: str
    fix: str  # the command (or step) that resolves it


def diagnose(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[Finding]:
    """Every finding, oldest cause first within each check; empty when all is well."""
    require_city_admin(caller, "run the installation's checks")
    with uow_factory() as uow:
        s = uow.session
        return [*_cities(s), *_guessed_kinds(s), *_zone_clashes(s), *_org_clashes(s),
                *_product_clashes(s)]


def _set_kind(name: str) -> str:
    return f"cityward orgs set-kind {shlex.quote(name)} KIND   (KIND: {', '.join(PARTNER_KINDS)})"


def _cities(s: Session) -> list[Finding]:
    city = city_org(s)
    extra = s.scalars(select(OrganizationRow).where(
        OrganizationRow.kind == OrgKind.CITY.value, OrganizationRow.id != city.id).order_by(OrganizationRow.id))
    return [Finding("extra_city", f"organization {o.name!r}",
                    f"is of kind city, like {city.name!r} made by `cityward init`: its tokens and users "
                    "see and may change the whole fleet", _set_kind(o.name)) for o in extra]


def _guessed_kinds(s: Session) -> list[Finding]:
    """Organizations an earlier version's import created: its `orgs.created` event carries no
    `brand` (`orgs add` always records one, possibly null) and names the organization rather than
    its id. Stated since (`orgs.kind_set`): no longer a guess."""
    stated = {t for (t,) in s.execute(select(AuditEventRow.target_id).where(AuditEventRow.action == "orgs.kind_set"))}
    found: list[Finding] = []
    city_id = city_org(s).id
    for seq, after in s.execute(select(AuditEventRow.seq, AuditEventRow.after)
                                .where(AuditEventRow.action == "orgs.created").order_by(AuditEventRow.seq)):
        if not isinstance(after, dict) or "brand" in after or not isinstance(after.get("name"), str):
            continue
        org = s.scalars(select(OrganizationRow).where(OrganizationRow.name_key == name_key(after["name"]))).first()
        if org is None or org.id == city_id or str(org.id) in stated or org.kind == OrgKind.CITY.value:
            continue  # kind city: reported by _cities already
        found.append(Finding("guessed_kind", f"organization {org.name!r}",
                             f"was created by an inventory import (audit event {seq}) as {after.get('kind')!r}, "
                             f"a kind guessed from the column naming it; it is {org.kind!r} now",
                             _set_kind(org.name) + " — to confirm or correct it"))
    return found


def _zone_clashes(s: Session) -> list[Finding]:
    found: list[Finding] = []
    for z in s.scalars(select(ZoneRow).where(ZoneRow.name_key.contains(CLASH_MARK)).order_by(ZoneRow.id)):
        holder = s.scalars(select(ZoneRow).where(ZoneRow.name_key == z.name_key.split(CLASH_MARK)[0])).first()
        devices = s.scalar(select(func.count()).select_from(DeviceRow).where(DeviceRow.zone_id == z.id)) or 0
        duties = list(s.scalars(select(ZoneResponsibilityRow.duty).where(ZoneResponsibilityRow.zone_id == z.id)))
        held = f", duties {', '.join(sorted(duties))}" if duties else ""
        found.append(Finding(
            "name_clash", f"zone {z.name!r}",
            f"is the same name as zone {holder.name if holder else '?'!r}, which every lookup and import "
            f"reaches; {z.name!r} keeps {devices} devices{held}",
            f"cityward zones rename {shlex.quote(z.name)} NEW-NAME   (first move what it holds to "
            f"{holder.name if holder else 'the other zone'!r}, e.g. `cityward zones assign`)"))
    return found


def _org_clashes(s: Session) -> list[Finding]:
    found: list[Finding] = []
    for o in s.scalars(select(OrganizationRow).where(OrganizationRow.name_key.contains(CLASH_MARK))
                       .order_by(OrganizationRow.id)):
        holder = s.scalars(select(OrganizationRow).where(
            OrganizationRow.name_key == o.name_key.split(CLASH_MARK)[0])).first()
        found.append(Finding(
            "name_clash", f"organization {o.name!r}",
            f"is the same name as organization {holder.name if holder else '?'!r} ({holder.kind if holder else '?'}), "
            f"which every lookup and import reaches; {o.name!r} is {o.kind}",
            f"cityward orgs rename {shlex.quote(o.name)} NEW-NAME"))
    return found


def _product_clashes(s: Session) -> list[Finding]:
    found: list[Finding] = []
    for p in s.scalars(select(ProductRow).order_by(ProductRow.id)):
        if not is_clash_key(p.model_key):
            continue
        holder = s.scalars(select(ProductRow).where(
            ProductRow.brand_key == p.brand_key, ProductRow.model_key == p.model_key.split(CLASH_MARK)[0])).first()
        other = f"{holder.brand} {holder.model} (id {holder.id})" if holder else "another product"
        found.append(Finding(
            "name_clash", f"product {p.brand} {p.model} (id {p.id})",
            f"is the same name as {other}, which every lookup and import reaches; its own devices keep it",
            "re-import those devices with the other product's brand and model (`cityward devices import`)"))
    return found
