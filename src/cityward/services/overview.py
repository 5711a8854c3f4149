"""The fleet at a glance: counts a city team looks at first (scoped like every read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select

from cityward.adapters.storage.models import DeviceRow, ProductRow, ZoneRow
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
