"""Organizations and the installation's first steps (`cityward init`)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityward.adapters.inventory_files import FileFormat, Layout, open_inventory
from cityward.adapters.storage.models import OrganizationRow
from cityward.adapters.storage.names import find_named, key_holder, rename_named
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_admin, require_token_admin
from cityward.domain.names import NameTaken, name_key
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.errors import Conflict, InvalidInput, NotFound, NotInitialized, Problem

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


def org_named(session: Session, name: str) -> OrganizationRow:
    """The organization called `name` in any case, width or spacing; NotFound if there is none."""
    org = find_named(session, OrganizationRow, name)
    if org is None:
        raise NotFound(f"organization {name!r} not found",
                       hint=f"create it with `cityward orgs add {_quoted(name)} --kind KIND`")
    return org


def org_id_named(session: Session, name: str | None) -> int | None:
    """The id of the organization called `name` (None for None); NotFound if there is none."""
    if name is None:
        return None
    return int(org_named(session, name).id)


def org_to_manage(session: Session, caller: Caller, org_name: str, role: Role, what: str) -> OrganizationRow:
    """The organization whose tokens or users `caller` is about to create with `role`: its own admin
    or the city admin, and only the city gives another organization an administrator."""
    org = org_named(session, org_name)
    require_token_admin(caller, org.id)
    if role is Role.ADMIN and not caller.is_city_admin and caller.org_id != org.id:
        raise InvalidInput(f"only the city may create {what} for another organization")
    return org


def check_name(name: str, what: str = "name") -> str:
    name = " ".join(name.split())
    if not name or len(name) > _NAME_LIMIT or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"{what} must be 1-{_NAME_LIMIT} printable characters")
    return name


PARTNER_KINDS = tuple(k for k in OrgKind if k is not OrgKind.CITY)


def parse_kind(kind: str) -> OrgKind:
    try:
        return OrgKind(kind.lower())
    except ValueError:
        raise InvalidInput(
            f"unknown organization kind {kind!r}; expected one of {', '.join(OrgKind)}"
        ) from None


def parse_partner_kind(kind: str) -> OrgKind:
    """A kind an organization may be given after `init`: any but city, which exists once."""
    org_kind = parse_kind(kind)
    if org_kind is OrgKind.CITY:
        raise InvalidInput(
            "kind city is the installation's own organization, made once by `cityward init`",
            [Problem(f"expected one of {', '.join(PARTNER_KINDS)}", field="kind")])
    return org_kind


def _quoted(name: str) -> str:
    """`name` as a shell word, for the commands error messages suggest."""
    return shlex.quote(name)


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
    org_kind = parse_partner_kind(kind)
    name = check_name(name)
    if brand is not None:
        brand = check_name(brand, "brand")
    if contact_email is not None and not _EMAIL.fullmatch(contact_email):
        raise InvalidInput(f"{contact_email[:60]!r} is not an e-mail address")
    if org_kind is OrgKind.MANUFACTURER and not brand:
        brand = name
    with uow_factory(write=True) as uow:
        if (same := key_holder(uow.session, OrganizationRow, name_key(name))) is not None:
            raise NameTaken("organization", name, same.name)
        row = OrganizationRow(name=name, name_key=name_key(name), kind=org_kind.value, brand=brand,
                              contact_email=contact_email, created_at=uow.clock())
        uow.session.add(row)
        uow.session.flush()
        view = _view(row)
        uow.record(caller, "orgs.created", "organization", row.id,
                   after={"name": name, "kind": org_kind.value, "brand": brand})
        uow.commit()
    return view


ORG_FILE = Layout(("name", "kind", "brand", "contact_email"), ("name", "kind"))
MAX_ORG_ROWS = 10_000


@dataclass(frozen=True)
class OrgImport:
    created: list[str]
    unchanged: list[str]  # already there with the kind the file states


def import_orgs(
    uow_factory: UnitOfWorkFactory, caller: Caller, stream: BinaryIO, source: str, fmt: FileFormat
) -> OrgImport:
    """Create the organizations a file lists, each with the kind it states (columns name, kind,
    brand, contact_email); all or nothing. The bulk form of `orgs add`, with the same rules: this
    is how an inventory's organizations get their kinds before `devices import` names them."""
    require_city_admin(caller, "create organizations")
    reader = open_inventory(stream, source, fmt, layout=ORG_FILE)
    problems: list[Problem] = []
    rows: list[tuple[int, str, OrgKind, str | None, str | None]] = []
    first: dict[str, int] = {}
    for row, raw in reader.rows:
        if len(rows) + len(problems) >= MAX_ORG_ROWS:
            raise InvalidInput(f"{source}: more than {MAX_ORG_ROWS} organizations; split the file")
        if "__problem__" in raw:
            problems.append(Problem(raw["__problem__"], row=row, source=source))
            continue
        try:
            name = check_name(str(raw.get("name") or ""), "name")
        except InvalidInput as exc:
            problems.append(Problem(exc.message, row=row, field="name", source=source))
            continue
        try:
            kind = parse_partner_kind(str(raw.get("kind") or ""))
            brand = check_name(str(raw["brand"]), "brand") if raw.get("brand") else None
            email = str(raw["contact_email"]) if raw.get("contact_email") else None
            if email is not None and not _EMAIL.fullmatch(email):
                raise InvalidInput(f"{email[:60]!r} is not an e-mail address")
        except InvalidInput as exc:
            field = exc.problems[0].field if exc.problems else (
                "brand" if "brand" in exc.message else "contact_email" if "e-mail" in exc.message else "kind")
            problems.append(Problem(exc.message, row=row, field=field, source=source))
            continue
        key = name_key(name)
        if key in first:
            problems.append(Problem(f"{name!r} is the same name as row {first[key]}", row=row, field="name",
                                    source=source))
            continue
        first[key] = row
        rows.append((row, name, kind, brand, email))
    if not rows and not problems:
        raise InvalidInput(f"{source}: the file has a header but no organizations")
    created: list[str] = []
    unchanged: list[str] = []
    with uow_factory(write=True) as uow:
        for row, name, kind, brand, email in rows:
            same = key_holder(uow.session, OrganizationRow, name_key(name))
            if same is not None:
                if same.kind == kind.value:
                    unchanged.append(same.name)
                elif same.kind == OrgKind.CITY.value:
                    problems.append(Problem(f"{same.name!r} is an organization of kind city", row=row,
                                            field="kind", source=source))
                else:
                    problems.append(Problem(
                        f"{same.name!r} exists as {same.kind}; change its kind with "
                        f"`cityward orgs set-kind {_quoted(same.name)} {kind.value}`",
                        row=row, field="kind", source=source))
                continue
            if kind is OrgKind.MANUFACTURER and not brand:
                brand = name
            org = OrganizationRow(name=name, name_key=name_key(name), kind=kind.value, brand=brand,
                                  contact_email=email, created_at=uow.clock())
            uow.session.add(org)
            uow.session.flush()
            uow.record(caller, "orgs.created", "organization", org.id,
                       after={"name": name, "kind": kind.value, "brand": brand, "source": source})
            created.append(name)
        if problems:
            raise InvalidInput(f"{source}: nothing was imported", problems[:200], more=max(len(problems) - 200, 0))
        uow.commit()
    return OrgImport(created, unchanged)


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
    key = name_key(name)
    for org in list_orgs(uow_factory, caller):
        if name_key(org.name) == key:
            return org
    raise NotFound(f"organization {name!r} not found")


def set_org_kind(uow_factory: UnitOfWorkFactory, caller: Caller, name: str, kind: str) -> OrgView:
    """Give a partner its kind, or confirm the one it has (recorded either way: `cityward doctor`
    stops reporting a kind an earlier version guessed once a person has stated it).

    The city made by `init` keeps its kind; another organization of kind city (only an earlier
    version's import made those) may, and should, be given its real kind."""
    require_city_admin(caller, "set organization kinds")
    org_kind = parse_partner_kind(kind)
    with uow_factory(write=True) as uow:
        row = org_named(uow.session, name)
        if row.id == city_org(uow.session).id:
            raise Conflict(f"{row.name!r} is the city made by `cityward init`; its kind stays city")
        before = row.kind
        row.kind = org_kind.value
        if org_kind is OrgKind.MANUFACTURER and not row.brand:
            row.brand = row.name
        view = _view(row)
        uow.record(caller, "orgs.kind_set", "organization", row.id,
                   before={"name": row.name, "kind": before},
                   after={"name": row.name, "kind": org_kind.value, "brand": row.brand})
        uow.commit()
    return view


def rename_org(uow_factory: UnitOfWorkFactory, caller: Caller, name: str, new_name: str) -> OrgView:
    """Rename an organization (imports and lookups use the new name from then on).

    `name` is matched exactly first: that is how a row that lost its name's key in a clash
    (migration 0009, reported by `cityward doctor`) is renamed away."""
    require_city_admin(caller, "rename organizations")
    new_name = check_name(new_name)
    with uow_factory(write=True) as uow:
        row, before = rename_named(uow.session, OrganizationRow, name, new_name, "organization")
        view = _view(row)
        uow.record(caller, "orgs.renamed", "organization", row.id,
                   before={"name": before}, after={"name": new_name})
        uow.commit()
    return view


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
