"""Organizations, roles and the caller every use case acts for."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OrgKind(StrEnum):
    CITY = "city"
    INTEGRATOR = "integrator"
    INSTALLER = "installer"
    DISTRIBUTOR = "distributor"
    CONSULTANT = "consultant"
    MANUFACTURER = "manufacturer"
    RESEARCHER = "researcher"


class Role(StrEnum):
    """What a token (later: a user) may do inside its organization's scope."""

    ADMIN = "admin"  # manage the organization's tokens; for the city, everything
    OPERATOR = "operator"  # change devices in scope
    VIEWER = "viewer"  # read only


@dataclass(frozen=True)
class Caller:
    """Who is acting: resolved once at the edge (token or local operator), passed to services."""

    actor: str  # shown in the audit log, e.g. "token:ab12cd34 (ops laptop)" or "local:root"
    org_id: int
    org_name: str
    org_kind: OrgKind
    role: Role
    brand: str | None = None  # for a manufacturer: the brand its products carry

    @property
    def is_city(self) -> bool:
        return self.org_kind is OrgKind.CITY

    @property
    def is_city_admin(self) -> bool:
        return self.is_city and self.role is Role.ADMIN
