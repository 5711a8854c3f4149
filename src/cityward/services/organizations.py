"""Organizations and the installation's first steps (`cityward init`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import OrganizationRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_admin, require_token_admin
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.errors import Conflict, InvalidInput, NotFound, NotInitialized

_NAME_LIMIT = 100
_EMAIL = re.compile(r"[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]{1,189}\.[A-Za-z]{2,63}")


@dataclass(frozen=True)
class OrgView:
    id: int
    name: str
    kind: str
    brand: str | None
    contact_email: str | None
    created_at: datetime


def _view(row: OrganizationRow) -> OrgView:
    return OrgView(row.id, row.name, row.kind, row.brand, row.contact_email, row.created_at)


def city_org(session: Session) -> OrganizationRow:
    row = session.scalars(
        select(OrganizationRow).where(OrganizationRow.kind == OrgKind.CITY.value)
        .order_by(OrganizationRow.id).limit(1)
    ).first()
    if row is None:
        raise NotInitialized("cityward has no city yet", hint="run `cityward init --city NAME`")
    return row


def org_id_named(session: Session, name: str | None) -> int | None:
    """The id of the organization called `name` (None for None); NotFound if there is none."""
    if name is None:
        return None
    org_id = session.scalar(select(OrganizationRow.id).where(OrganizationRow.name == name))
    if org_id is None:
        raise NotFound(f"organization {name!r} not found")
    return int(org_id)


def org_to_manage(session: Session, caller: Caller, org_name: str, role: Role, what: str) -> OrganizationRow:
    """The organization whose tokens or users `caller` is about to create with `role`: its own admin
    or the city admin, and only the city gives another organization an administrator."""
    org = session.scalars(select(OrganizationRow).where(OrganizationRow.name == org_name)).first()
    if org is None:
        raise NotFound(f"organization {org_name!r} not found")
    require_token_admin(caller, org.id)
    if role is Role.ADMIN and not caller.is_city_admin and caller.org_id != org.id:
        raise InvalidInput(f"only the city may create {what} for another organization")
    return org


def check_name(name: str, what: str = "name") -> str:
    name = " ".join(name.split())
    if not name or len(name) > _NAME_LIMIT or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"{what} must be 1-{_NAME_LIMIT} printable characters")
    return name


def parse_kind(kind: str) -> OrgKind:
    try:
        return OrgKind(kind.lower())
    except ValueError:
        raise InvalidInput(
            f"unknown organization kind {kind!r}; expected one of {', '.join(OrgKind)}"
        ) from None


def create_org(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    name: str,
    kind: str,
    *,
    brand: str | None = None,
    contact_email: str | None = None,
) -> OrgView:
    require_city_admin(caller, "create organizations")
    org_kind = parse_kind(kind)
    name = check_name(name)
    if brand is not None:
        brand = check_name(brand, "brand")
    if contact_email is not None and not _EMAIL.fullmatch(contact_email):
        raise InvalidInput(f"{contact_email[:60]!r} is not an e-mail address")
    if org_kind is OrgKind.MANUFACTURER and not brand:
        brand = name
    with uow_factory(write=True) as uow:
        if uow.session.scalar(select(OrganizationRow.id).where(OrganizationRow.name == name)):
            raise Conflict(f"organization {name!r} already exists")
        row = OrganizationRow(name=name, kind=org_kind.value, brand=brand,
                              contact_email=contact_email, created_at=uow.clock())
        uow.session.add(row)
        uow.session.flush()
        view = _view(row)
        uow.record(caller, "orgs.created", "organization", row.id,
                   after={"name": name, "kind": org_kind.value, "brand": brand})
        uow.commit()
    return view


def list_orgs(uow_factory: UnitOfWorkFactory, caller: Caller, kind: str | None = None) -> list[OrgView]:
    """The city sees every partner; a partner sees itself and the city it works for."""
    with uow_factory() as uow:
        q = select(OrganizationRow).order_by(OrganizationRow.name)
        if kind:
            q = q.where(OrganizationRow.kind == parse_kind(kind).value)
        if not caller.is_city:
            q = q.where((OrganizationRow.id == caller.org_id)
                        | (OrganizationRow.kind == OrgKind.CITY.value))
        return [_view(r) for r in uow.session.scalars(q)]


def get_org(uow_factory: UnitOfWorkFactory, caller: Caller, name: str) -> OrgView:
    for org in list_orgs(uow_factory, caller):
        if org.name == name:
            return org
    raise NotFound(f"organization {name!r} not found")


def is_initialized(uow_factory: UnitOfWorkFactory) -> bool:
    with uow_factory() as uow:
        return uow.session.scalar(
            select(OrganizationRow.id).where(OrganizationRow.kind == OrgKind.CITY.value)
        ) is not None


def local_operator(uow_factory: UnitOfWorkFactory, user: str) -> Caller:
    """Whoever runs the CLI on the server itself (it holds the database and the key): city admin."""
    with uow_factory() as uow:
        city = city_org(uow.session)
        return Caller(actor=f"local:{user}", org_id=city.id, org_name=city.name,
                      org_kind=OrgKind.CITY, role=Role.ADMIN)


def system_caller(session: Session, component: str) -> Caller:
    """cityward itself acting on what devices say (e.g. registering an announced device)."""
    city = city_org(session)
    return Caller(actor=f"system:{component}", org_id=city.id, org_name=city.name,
                  org_kind=OrgKind.CITY, role=Role.ADMIN)
