"""The fleet at a glance: counts a city team looks at first (scoped like every read)."""

from __future__ import annotations

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
    today = today or date.today()
    with uow_factory() as uow:
        s = uow.session
        where = scope_clause(s, device_scope(caller))
        base = select(func.count()).select_from(DeviceRow).join(
            ProductRow, ProductRow.id == DeviceRow.product_id).where(where)

        def grouped(column: Any) -> list[tuple[str, int]]:
            q = (select(column, func.count()).select_from(DeviceRow)
                 .join(ProductRow, ProductRow.id == DeviceRow.product_id)
                 .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
                 .where(where).group_by(column).order_by(func.count().desc()))
            return [(str(k), int(n)) for k, n in s.execute(q)]

        return FleetOverview(
            devices=int(s.scalar(base) or 0),
            by_kind=grouped(DeviceRow.kind),
            by_zone=grouped(ZoneRow.name),
            by_manufacturer=grouped(ProductRow.origin_brand),
            relabeled=int(s.scalar(base.where(ProductRow.origin_status == OriginStatus.RELABELED.value)) or 0),
            unknown_origin=int(s.scalar(base.where(ProductRow.origin_status == OriginStatus.UNKNOWN.value)) or 0),
            past_end_of_support=int(s.scalar(base.where(ProductRow.end_of_support < today)) or 0),
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
    now = now or datetime.now(UTC)
    with uow_factory() as uow:
        s = uow.session
        where = scope_clause(s, device_scope(caller))
        joined = select(func.count()).select_from(DeviceRow).join(
            DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id).where(where)

        def count(*conds: Any) -> int:
            return int(s.scalar(joined.where(*conds)) or 0)

        def grouped(column: Any, *conds: Any) -> list[tuple[str, int]]:
            q = (select(column, func.count()).select_from(DeviceRow)
                 .join(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
                 .where(where, *conds).group_by(column).order_by(func.count().desc()))
            return [(str(k), int(n)) for k, n in s.execute(q)]

        total = int(s.scalar(select(func.count()).select_from(DeviceRow).where(where)) or 0)
        reporting = count()
        online = count(DeviceStateRow.online.is_(True))
        services = cast(DeviceStateRow.services, Text)
        return LiveOverview(
            reporting=reporting, online=online, offline=reporting - online, never_reported=total - reporting,
            credential_states=grouped(DeviceStateRow.credential_state),
            insecure_services=[(name, count(services.contains(f'"{name}"'))) for name in INSECURE_SERVICES],
            remote_access=count(cast(DeviceStateRow.remote_access, Text).not_in(["[]", "null"]),
                                DeviceStateRow.remote_access.is_not(None)),
            cert_expired=count(DeviceStateRow.cert_expires_at < now),
            cert_expiring_30d=count(DeviceStateRow.cert_expires_at >= now,
                                    DeviceStateRow.cert_expires_at < now + timedelta(days=30)),
            quarantined=count(DeviceStateRow.quarantined.is_(True)),
            offline_reasons=grouped(DeviceStateRow.offline_reason, DeviceStateRow.online.is_(False)),
        )
