"""Desired configuration: what devices matching a selector should run, and which have drifted.

A device is drifted when the configuration hash it reports differs from the desired one (the hash
is the protocol's: SHA-256 of the canonical JSON). A `set_config` rollout applies the desired state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from cityward.adapters.storage.models import DesiredConfigRow, DeviceRow, DeviceStateRow, ProductRow, ZoneRow
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_operator, require_device_details
from cityward.domain.organizations import Caller
from cityward.errors import InvalidInput, NotFound, Problem
from cityward.services.inventory import DeviceFilter, apply_filter

MAX_CONFIG_BYTES = 64 * 1024
SELECTOR_KEYS = ("kind", "zone", "brand", "manufacturer", "firmware", "tag")


def config_hash(config: dict[str, Any]) -> str:
    """docs/protocol.md §1 "Canonical JSON": lowercase hex SHA-256 of the configuration with keys
    sorted by code point, no spaces, and everything outside printable ASCII escaped as \\uxxxx
    (UTF-16 surrogate pairs beyond the basic plane) — what json.dumps writes by default."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON parser (JavaScript's too) reads exactly


def _unhashable(value: Any, where: str) -> list[tuple[str, str]]:
    """Values a device could not hash the same way (docs/protocol.md, canonical JSON): numbers
    other than integers within ±(2^53 - 1); a C or JavaScript device would write `1.0` as `1`."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int):
        return [] if abs(value) <= MAX_SAFE_INTEGER else [(where, "integer beyond ±(2^53 - 1)")]
    if isinstance(value, float):
        return [(where, "numbers in a configuration must be integers (write 0.5 as a string or in units)")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _unhashable(v, f"{where}[{i}]")][:20]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _unhashable(v, f"{where}.{k}")][:20]
    return [(where, f"not a JSON value ({type(value).__name__})")]


@dataclass(frozen=True)
class DesiredView:
    name: str
    selector: dict[str, str]
    config: dict[str, Any]
    config_hash: str
    created_by: str


def selector_filter(selector: dict[str, str]) -> DeviceFilter:
    return DeviceFilter(kind=selector.get("kind"), zone=selector.get("zone"), brand=selector.get("brand"),
                        manufacturer=selector.get("manufacturer"), firmware=selector.get("firmware"),
                        tag=selector.get("tag"))


def _check(name: str, selector: dict[str, str], config: Any) -> None:
    problems = []
    if not name.strip() or len(name) > 100:
        problems.append(Problem("must be 1 to 100 characters", field="name"))
    for key in selector:
        if key not in SELECTOR_KEYS:
            problems.append(Problem(f"unknown selector; use {', '.join(SELECTOR_KEYS)}", field=f"selector.{key}"))
    if not isinstance(config, dict) or not config:
        problems.append(Problem("must be a non-empty JSON object", field="config"))
    elif len(json.dumps(config)) > MAX_CONFIG_BYTES:
        problems.append(Problem(f"is larger than {MAX_CONFIG_BYTES:,} bytes", field="config"))
    else:
        problems.extend(Problem(why, field=f"config{where}") for where, why in _unhashable(config, ""))
    if problems:
        raise InvalidInput("the desired configuration was not saved", problems)


def set_desired(uow_factory: UnitOfWorkFactory, caller: Caller, name: str, selector: dict[str, str],
                config: Any) -> DesiredView:
    """Create or replace a named desired configuration (city operators: it is city policy)."""
    _check(name, selector, config)
    require_city_operator(caller, "set desired configurations")
    digest = config_hash(config)
    with uow_factory(write=True) as uow:
        s = uow.session
        apply_filter(s, select(DeviceRow.id), selector_filter(selector))  # an unknown zone is refused here
        row = s.scalar(select(DesiredConfigRow).where(DesiredConfigRow.name == name.strip()))
        before = None
        if row is None:
            row = DesiredConfigRow(name=name.strip(), selector=selector, config=config, config_hash=digest,
                                   created_by=caller.actor, created_at=uow.clock())
            s.add(row)
        else:
            before = {"selector": row.selector, "config_hash": row.config_hash}
            row.selector, row.config, row.config_hash = selector, config, digest
        uow.record(caller, "config.desired_set", "desired_config", name.strip(), before=before,
                   after={"selector": selector, "config_hash": digest})
        view = DesiredView(row.name, dict(row.selector), dict(row.config), row.config_hash, row.created_by)
        uow.commit()
    return view


def list_desired(uow_factory: UnitOfWorkFactory) -> list[DesiredView]:
    with uow_factory() as uow:
        return [DesiredView(r.name, dict(r.selector), dict(r.config), r.config_hash, r.created_by)
                for r in uow.session.scalars(select(DesiredConfigRow).order_by(DesiredConfigRow.name))]


@dataclass(frozen=True)
class Drift:
    device_id: str
    zone: str
    reported_hash: str | None  # None: never reported a configuration


def drift(uow_factory: UnitOfWorkFactory, caller: Caller, name: str, limit: int = 10_000) -> tuple[int, list[Drift]]:
    """(devices the desired configuration applies to, the drifted ones among them) in the caller's scope."""
    scope = require_device_details(caller)
    with uow_factory() as uow:
        s = uow.session
        row = s.scalar(select(DesiredConfigRow).where(DesiredConfigRow.name == name))
        if row is None:
            raise NotFound(f"desired configuration {name!r} not found")
        q = (select(DeviceRow.id, ZoneRow.name, DeviceStateRow.config_hash)
             .join(ProductRow, ProductRow.id == DeviceRow.product_id)
             .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
             .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
             .where(scope_clause(s, scope)))
        q = apply_filter(s, q, selector_filter(row.selector)).order_by(DeviceRow.id)
        rows = s.execute(q).all()
        drifted = [Drift(d, z, h) for d, z, h in rows if h != row.config_hash]
        return len(rows), drifted[:limit]
