"""`cityward init`: the city organization and its first admin token, once per installation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from cityward.adapters.storage.models import OrganizationRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.errors import Conflict
from cityward.services.organizations import check_name
from cityward.services.tokens import IssuedToken, issue_token


@dataclass(frozen=True)
class Installation:
    city: str
    admin_token: IssuedToken


def initialize(uow_factory: UnitOfWorkFactory, city_name: str, actor: str) -> Installation:
    name = check_name(city_name, "city name")
    with uow_factory(write=True) as uow:
        if uow.session.scalar(select(OrganizationRow.id).where(OrganizationRow.kind == OrgKind.CITY.value)):
            raise Conflict("cityward is already initialized",
                           hint="create more tokens with `cityward tokens create`")
        city = OrganizationRow(name=name, kind=OrgKind.CITY.value, created_at=uow.clock())
        uow.session.add(city)
        uow.session.flush()
        caller = Caller(actor=actor, org_id=city.id, org_name=name, org_kind=OrgKind.CITY,
                        role=Role.ADMIN)
        uow.record(caller, "installation.initialized", "organization", city.id,
                   after={"name": name, "kind": "city"})
        token = issue_token(uow, caller, city, "first admin", Role.ADMIN, None)
        uow.commit()
    return Installation(name, token)
