"""The fleet at a glance: counts a city team looks at first (scoped like every read)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func, select

from cityward.adapters.storage.models import DeviceRow, DeviceStateRow, ProductRow, ZoneRow
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import device_scope
from cityward.domain.organizations import Caller
from cityward.domain.products import OriginStatus
from cityward.services.vulnerabilities import known_exploited_exposure


@dataclass(frozen=True)
class FleetOverview:
    devices: int
    by_kind: list[tuple[str, int]]
    by_zone: list[tuple[str, int]]
    by_manufacturer: list[tuple[str, int]]
    relabeled: int
    unknown_origin: int
    past_end_of_support: int

    @property
    def relabeled_share(self) -> float:
        return self.relabeled / self.devices if self.devices else 0.0


def fleet_overview(uow_factory: UnitOfWorkFactory, caller: Caller, today: date | None = None) -> FleetOverview:
    """Four passes over the scoped fleet (the scalar counts share one, filtered aggregates)."""
    today = today or date.today()
    with uow_factory() as uow:
        s = uow.session
        where = scope_clause(s, device_scope(caller))

        def grouped(column: Any) -> list[tuple[str, int]]:
            q = (select(column, func.count()).select_from(DeviceRow)
                 .join(ProductRow, ProductRow.id == DeviceRow.product_id)
                 .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
                 .where(where).group_by(column).order_by(func.count().desc()))
            return [(str(k), int(n)) for k, n in s.execute(q)]

        total, relabeled, unknown, past_eos = s.execute(
            select(func.count(),
                   func.count().filter(ProductRow.origin_status == OriginStatus.RELABELED.value),
                   func.count().filter(ProductRow.origin_status == OriginStatus.UNKNOWN.value),
                   func.count().filter(ProductRow.end_of_support < today))
            .select_from(DeviceRow).join(ProductRow, ProductRow.id == DeviceRow.product_id).where(where)).one()
        return FleetOverview(
            devices=int(total or 0),
            by_kind=grouped(DeviceRow.kind),
            by_zone=grouped(ZoneRow.name),
            by_manufacturer=grouped(ProductRow.origin_brand),
            relabeled=int(relabeled or 0),
            unknown_origin=int(unknown or 0),
            past_end_of_support=int(past_eos or 0),
        )


@dataclass(frozen=True)
class LiveOverview:
    """What the devices themselves reported: the facts behind most policy findings."""

    reporting: int  # devices that ever reported
    online: int
    offline: int
    never_reported: int
    credential_states: list[tuple[str, int]]
    insecure_services: list[tuple[str, int]]  # telnet, ftp, upnp: devices with it enabled
    remote_access: int  # devices with any remote-access channel
    cert_expired: int
    cert_expiring_30d: int
    quarantined: int
    offline_reasons: list[tuple[str, int]]


INSECURE_SERVICES = ("telnet", "ftp", "upnp")


def live_overview(uow_factory: UnitOfWorkFactory, caller: Caller, now: datetime | None = None) -> LiveOverview:
    """Three passes over the scoped fleet's reported state: one for every scalar count (filtered
    aggregates), one per grouping."""
    now = now or datetime.now(UTC)
    with uow_factory() as uow:
        s = uow.session
        where = scope_clause(s, device_scope(caller))

        def grouped(column: Any, *conds: Any) -> list[tuple[str, int]]:
            q = (select(column, func.count()).select_from(DeviceRow)
                 .join(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
                 .where(where, *conds).group_by(column).order_by(func.count().desc()))
            return [(str(k), int(n)) for k, n in s.execute(q)]

        services = cast(DeviceStateRow.services, Text)
        remote = cast(DeviceStateRow.remote_access, Text)
        reported = DeviceStateRow.device_id.is_not(None)
        counts = s.execute(
            select(func.count(), func.count().filter(reported),
                   func.count().filter(DeviceStateRow.online.is_(True)),
                   *(func.count().filter(services.contains(f'"{name}"')) for name in INSECURE_SERVICES),
                   func.count().filter(DeviceStateRow.remote_access.is_not(None), remote.not_in(["[]", "null"])),
                   func.count().filter(DeviceStateRow.cert_expires_at < now),
                   func.count().filter(DeviceStateRow.cert_expires_at >= now,
                                       DeviceStateRow.cert_expires_at < now + timedelta(days=30)),
                   func.count().filter(DeviceStateRow.quarantined.is_(True)))
            .select_from(DeviceRow).outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
            .where(where)).one()
        total, reporting, online, *rest = (int(n or 0) for n in counts)
        insecure = rest[:len(INSECURE_SERVICES)]
        remote_access, cert_expired, cert_expiring, quarantined = rest[len(INSECURE_SERVICES):]
        return LiveOverview(
            reporting=reporting, online=online, offline=reporting - online, never_reported=total - reporting,
            credential_states=grouped(DeviceStateRow.credential_state),
            insecure_services=list(zip(INSECURE_SERVICES, insecure, strict=True)),
            remote_access=remote_access, cert_expired=cert_expired, cert_expiring_30d=cert_expiring,
            quarantined=quarantined,
            offline_reasons=grouped(DeviceStateRow.offline_reason, DeviceStateRow.online.is_(False)),
        )


@dataclass(frozen=True)
class Posture:
    """Everything the dashboard's overview counts over the whole fleet, taken together."""

    fleet: FleetOverview
    live: LiveOverview
    kev_devices: int  # devices whose firmware has a CVE in CISA KEV
    kev_cves: int


def posture(uow_factory: UnitOfWorkFactory, caller: Caller) -> Posture:
    kev_devices, kev_cves = known_exploited_exposure(uow_factory, caller)
    return Posture(fleet_overview(uow_factory, caller), live_overview(uow_factory, caller), kev_devices, kev_cves)


def posture_key(caller: Caller) -> Hashable:
    """Callers who see the same devices share one posture snapshot: the scope follows the
    organization (and its kind and brand), not the person."""
    return (caller.org_id, caller.org_kind, caller.brand)

