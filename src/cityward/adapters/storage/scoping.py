"""Turns a caller's device scope (domain.access) into one SQL condition on `devices`.

Every device query goes through here, so no endpoint or command can forget the scope.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import DeviceRow, ProductRow, ZoneResponsibilityRow, ZoneRow
from cityward.domain.access import DeviceScope, Reach
from cityward.domain.products import product_key
from cityward.domain.responsibility import DEVICE_COLUMN, Duty, zones_held


def zone_tree(session: Session) -> dict[int, int | None]:
    return {zid: parent for zid, parent in session.execute(select(ZoneRow.id, ZoneRow.parent_id))}


def responsible_clause(session: Session, org_id: int, duties: frozenset[Duty]) -> ColumnElement[bool]:
    """Devices for which `org_id` holds any of `duties`, by override or through its zone."""
    parents = zone_tree(session)
    assignments = {
        (zid, Duty(duty)): org
        for zid, duty, org in session.execute(
            select(ZoneResponsibilityRow.zone_id, ZoneResponsibilityRow.duty, ZoneResponsibilityRow.org_id)
        )
    }
    terms: list[ColumnElement[bool]] = []
    for duty in sorted(duties):
        column = getattr(DeviceRow, DEVICE_COLUMN[duty])
        terms.append(column == org_id)
        held = zones_held(org_id, duty, parents, assignments)
        if held:
            terms.append(and_(column.is_(None), DeviceRow.zone_id.in_(sorted(held))))
    return or_(*terms)


def manufactured_clause(brand: str) -> ColumnElement[bool]:
    brand_key, _ = product_key(brand, "")
    return DeviceRow.product_id.in_(select(ProductRow.id).where(ProductRow.origin_brand_key == brand_key))


def scope_clause(session: Session, scope: DeviceScope) -> ColumnElement[bool]:
    if scope.reach is Reach.ALL:
        return true()
    if scope.reach is Reach.RESPONSIBLE:
        assert scope.org_id is not None
        return responsible_clause(session, scope.org_id, scope.duties)
    if scope.reach is Reach.MANUFACTURED:
        assert scope.brand is not None
        return manufactured_clause(scope.brand)
    return false()
