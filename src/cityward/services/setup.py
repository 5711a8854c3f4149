"""`cityward init`: the city organization, its first admin token and its first admin user (with a
generated password), once per installation. There are no default credentials."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from cityward.adapters.storage.models import OrganizationRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.names import name_key
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.errors import Conflict
from cityward.services.organizations import check_name
from cityward.services.tokens import IssuedToken, issue_token
from cityward.services.users import NewPassword, add_user


@dataclass(frozen=True)
class Installation:
    city: str
    admin_token: IssuedToken
    admin_user: NewPassword | None  # its generated password is shown once


def initialize(uow_factory: UnitOfWorkFactory, city_name: str, actor: str,
               admin_user: str | None = "admin") -> Installation:
    """`admin_user` None: no dashboard user (tests that need none skip argon2's deliberate cost)."""
    name = check_name(city_name, "city name")
    with uow_factory(write=True) as uow:
        if uow.session.scalar(select(OrganizationRow.id).where(OrganizationRow.kind == OrgKind.CITY.value)):
            raise Conflict("cityward is already initialized",
                           hint="create more tokens with `cityward tokens create`; `cityward doctor` "
                                "checks what earlier versions left (guessed organization kinds, clashing names)")
        city = OrganizationRow(name=name, name_key=name_key(name), kind=OrgKind.CITY.value,
                               created_at=uow.clock())
        uow.session.add(city)
        uow.session.flush()
        caller = Caller(actor=actor, org_id=city.id, org_name=name, org_kind=OrgKind.CITY,
                        role=Role.ADMIN)
        uow.record(caller, "installation.initialized", "organization", city.id,
                   after={"name": name, "kind": "city"})
        token = issue_token(uow, caller, city, "first admin", Role.ADMIN, None)
        user = add_user(uow, caller, city, admin_user, Role.ADMIN) if admin_user else None
        uow.commit()
    return Installation(name, token, user)
