"""Inventory use cases: import, export, list, show and summarize devices, always within scope."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, BinaryIO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from cityward.adapters.inventory_files import (
    FileFormat,
    InventoryReader,
    open_inventory,
    write_csv,
    write_json,
)
from cityward.adapters.storage import staging as stg
from cityward.adapters.storage.models import (
    DeviceRow,
    DeviceStateRow,
    OrganizationRow,
    ProductRow,
    ZoneResponsibilityRow,
    ZoneRow,
)
from cityward.adapters.storage.scoping import responsible_clause, scope_clause, zone_tree
from cityward.adapters.storage.uow import UnitOfWork, UnitOfWorkFactory
from cityward.domain.access import (
    CLAIM_COLUMNS,
    Action,
    device_scope,
    require_city_admin,
    require_device_details,
    require_device_write,
)
from cityward.domain.catalog import guess_scheme
from cityward.domain.inventory import DeviceRecord, parse_row
from cityward.domain.organizations import Caller
from cityward.domain.products import OriginStatus, product_key
from cityward.domain.responsibility import (
    DEVICE_COLUMN,
    Duty,
    effective_responsibility,
    parse_duty,
    zone_chain,
)
from cityward.domain.zones import Criticality
from cityward.errors import InvalidInput, NotFound, Problem
from cityward.services.organizations import PARTNER_KINDS, city_org, org_id_named
from cityward.services.zones import zone_id_named

MAX_LISTED = 200  # problems shown per import; the rest are counted
BATCH = 10_000
ProgressFn = Callable[[int, int], None]  # (rows read, bytes read)


@dataclass
class ImportReport:
    source: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # existing devices the file describes exactly as stored
    rejected_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0
    committed: bool = False
    created_zones: list[str] = field(default_factory=list)
    created_products: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    sha256: str = ""

    @property
    def imported(self) -> int:
        """Rows accepted: new, changed and already identical devices."""
        return self.created + self.updated + self.unchanged

    def add(self, problems: list[Problem]) -> None:
        """List problems up to MAX_LISTED; count the rest."""
        listed = problems[: max(MAX_LISTED - len(self.problems), 0)]
        self.problems.extend(listed)
        self.more_problems += len(problems) - len(listed)


class _Hashing:
    """Hashes the bytes as they are read, so the audit event names exactly what was imported."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.digest.update(data)
        return data

    def readline(self, n: int = -1) -> bytes:
        data = self.raw.readline(n)
        self.digest.update(data)
        return data


def import_devices(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    stream: BinaryIO,
    source: str,
    fmt: FileFormat,
    *,
    partial: bool = False,
    create_missing: bool = False,
    ignore_unknown: bool = False,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Upsert devices by id from a CSV or JSON inventory; all-or-nothing unless `partial`.

    Raises InvalidInput (database unchanged) when the file is unusable, or when any row is bad
    and `partial` is off; with `partial`, good rows are imported and bad ones reported.
    """
    require_device_write(caller)
    if create_missing:
        require_city_admin(caller, "create zones while importing")
    hashing = _Hashing(stream)
    reader = open_inventory(hashing, source, fmt, ignore_unknown=ignore_unknown)  # type: ignore[arg-type]
    report = ImportReport(source)
    with uow_factory(write=True) as uow:
        _upsert(uow, caller, reader, report, partial, create_missing, progress)
        report.ignored_columns = list(reader.unknown) if ignore_unknown else []
        report.sha256 = hashing.digest.hexdigest()
        uow.record(caller, "devices.imported", "inventory", source, after={
            "sha256": report.sha256, "format": str(fmt), "rows_read": report.rows_read,
            "created": report.created, "updated": report.updated, "unchanged": report.unchanged,
            "rejected_rows": report.rejected_rows, "columns": reader.columns,
            "partial": partial,
        })
        uow.commit()
    report.committed = True
    return report


def _upsert(
    uow: UnitOfWork,
    caller: Caller,
    reader: InventoryReader,
    report: ImportReport,
    partial: bool,
    create_missing: bool,
    progress: ProgressFn | None = None,
) -> None:
    """The one write path for devices, bulk or single: validate, check set-wise, merge."""
    staging = stg.DeviceStaging(uow)
    _load(staging, reader, report, progress)
    _check_sets(uow, staging, caller, report, partial, create_missing)
    if report.problems and not partial:
        raise _rejected(report)
    _create_missing_catalog(uow, caller, staging, report)
    if create_missing:
        _create_missing_refs(uow, caller, staging, report)
    total = staging.count()
    existing = staging.existing_count()
    report.created = total - existing
    written = staging.merge(reader.columns, city_org(uow.session).id, uow.clock())
    report.updated = written - report.created
    report.unchanged = existing - report.updated


def save_device(uow_factory: UnitOfWorkFactory, caller: Caller, raw: dict[str, Any]) -> DeviceView:
    """Create or replace one device with exactly the rules of a bulk import (a one-row file).

    Columns missing from `raw` keep their stored values on an existing device.
    """
    require_device_write(caller)
    device_id = raw.get("id")
    source = f"device {device_id}"
    reader = open_inventory(io.BytesIO(json.dumps([raw], default=str).encode()), source,
                            FileFormat.JSON)
    with uow_factory(write=True) as uow:
        before = _snapshot(uow.session, caller, device_id)
        report = ImportReport(source)
        _upsert(uow, caller, reader, report, partial=False, create_missing=False)
        after = _snapshot(uow.session, caller, device_id)
        uow.record(caller, "devices.created" if before is None else "devices.updated", "device",
                   str(device_id), before=before, after=after)
        uow.commit()
    return get_device(uow_factory, caller, str(device_id))


def assign_device_duty(
    uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str, duty: str, org: str | None
) -> DeviceView:
    """Override who holds `duty` for one device (None: fall back to its zone's assignment).

    The city decides; a partner may not hand a duty over, even for a device it holds.
    """
    require_city_admin(caller, "assign responsibilities")
    the_duty = parse_duty(duty)
    column = DEVICE_COLUMN[the_duty]
    with uow_factory(write=True) as uow:
        s = uow.session
        device = s.get(DeviceRow, device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} not found")
        org_id = org_id_named(s, org)
        before = getattr(device, column)
        setattr(device, column, org_id)
        device.updated_at = uow.clock()
        uow.record(caller, "devices.duty_assigned", "device", device_id,
                   before={"duty": the_duty.value, "org_id": before},
                   after={"duty": the_duty.value, "org_id": org_id, "org": org})
        uow.commit()
    return get_device(uow_factory, caller, device_id)


def delete_device(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str) -> None:
    """Remove a decommissioned device from the inventory (its last record stays in the audit log).
    The city's call: a removed device leaves audits, matching and rollouts, so no partner may."""
    require_device_write(caller, Action.DELETE_DEVICE)
    with uow_factory(write=True) as uow:
        before = _snapshot(uow.session, caller, device_id)
        if before is None:
            raise NotFound(f"device {device_id!r} not found")
        uow.session.execute(delete(DeviceRow).where(DeviceRow.id == device_id))
        uow.session.execute(delete(DeviceStateRow).where(DeviceStateRow.device_id == device_id))
        uow.record(caller, "devices.deleted", "device", device_id, before=before)
        uow.commit()


def _snapshot(session: Session, caller: Caller, device_id: Any) -> dict[str, Any] | None:
    if not isinstance(device_id, str):
        return None
    row = session.execute(
        _device_query(session, caller, DeviceFilter()).where(DeviceRow.id == device_id)
    ).first()
    return _record(row) if row else None


def _rejected(report: ImportReport) -> InvalidInput:
    return InvalidInput(
        f"{report.source}: {report.rejected_rows} of {report.rows_read} rows are bad; "
        "nothing was imported",
        [Problem(p.message, p.row, p.field, report.source) for p in report.problems],
        more=report.more_problems,
        hint="fix the rows listed, or pass --partial to import only the good rows",
    )


def _load(
    staging: stg.DeviceStaging,
    reader: InventoryReader,
    report: ImportReport,
    progress: ProgressFn | None,
) -> None:
    batch: list[tuple[Any, ...]] = []
    for row, raw in reader.rows:
        report.rows_read += 1
        if "__problem__" in raw:
            report.rejected_rows += 1
            report.add([Problem(raw["__problem__"], row=row)])
            continue
        parsed = parse_row(raw, row)
        if isinstance(parsed, DeviceRecord):
            batch.append(stg.stage_tuple(row, parsed))
            if len(batch) >= BATCH:
                staging.add(batch)
                batch.clear()
                if progress:
                    progress(report.rows_read, reader.bytes_read)
        else:
            report.rejected_rows += 1
            report.add(parsed)
    staging.add(batch)
    if progress:
        progress(report.rows_read, reader.bytes_read)
    if report.rows_read == 0:
        raise InvalidInput(f"{report.source}: the file has a header but no device rows")
    staging.finish_loading()


def _check_sets(
    uow: UnitOfWork,
    staging: stg.DeviceStaging,
    caller: Caller,
    report: ImportReport,
    partial: bool,
    create_missing: bool,
) -> None:
    checks = stg.duplicate_checks() + stg.fleet_conflict_checks()
    if not create_missing:
        checks.append(stg.reference_check("zone", "zones", _unknown_zone))
    # Organizations are never created by an import, --create-missing or not: a kind decides what
    # an organization sees, and a file cannot say it (an owner column once made a partner the city).
    checks += [stg.reference_check(c, "organizations", _unknown_org) for c in stg.ORG_REFERENCES]
    if not caller.is_city:
        checks.append(stg.claim_check(CLAIM_COLUMNS[caller.org_kind], caller.org_name,
                                      caller.org_kind.value))
        clause = scope_clause(uow.session, device_scope(caller))
        compiled = clause.compile(uow.engine, compile_kwargs={"literal_binds": True})
        checks.append(stg.outside_scope_check(str(compiled)))
    found: list[Problem] = []
    failing: list[tuple[stg.Check, int]] = []
    for check in checks:
        problems, total = staging.problems(check, MAX_LISTED)
        if total:
            found.extend(problems)
            report.more_problems += total - len(problems)
            if partial:
                report.rejected_rows += staging.drop(check)
            else:
                failing.append((check, total))
    if len(failing) == 1:
        report.rejected_rows += failing[0][1]
    elif failing:  # a row failing two rules counts once
        report.rejected_rows += staging.count_rows([c for c, _ in failing])
    found.sort(key=lambda p: (p.row or 0, p.field or ""))
    report.add(found)


def _unknown_zone(name: Any) -> str:
    return (f"zone {name!r} does not exist; create it with `cityward zones add {shlex.quote(str(name))}`, "
            "or pass --create-missing")


def _unknown_org(name: Any) -> str:
    return (f"organization {name!r} does not exist; an import never creates one (its kind decides "
            f"what it sees): create it with `cityward orgs add {shlex.quote(str(name))} --kind KIND` "
            f"(KIND: {', '.join(PARTNER_KINDS)})")


def _create_missing_catalog(
    uow: UnitOfWork, caller: Caller, staging: stg.DeviceStaging, report: ImportReport
) -> None:
    """A brand+model the catalog lacks joins it with unknown origin (the baseline flags that)."""
    now = uow.clock()
    for brand, model, brand_key, model_key, kind, firmware in staging.new_products():
        product = ProductRow(
            brand=brand, model=model, brand_key=brand_key, model_key=model_key, kind=kind,
            origin_status=OriginStatus.UNKNOWN.value, origin_brand=brand, origin_model=model,
            origin_brand_key=brand_key, origin_depth=0,
            version_scheme=guess_scheme(firmware).value, created_at=now, updated_at=now,
        )
        uow.session.add(product)
        uow.session.flush()
        uow.record(caller, "products.created", "product", product.id,
                   after={"brand": brand, "model": model, "origin_status": "unknown",
                          "reason": f"named by inventory {report.source}"})
        report.created_products.append(f"{brand} {model}")


def _create_missing_refs(
    uow: UnitOfWork, caller: Caller, staging: stg.DeviceStaging, report: ImportReport
) -> None:
    """Zones the file names that do not exist yet (only zones: see `_check_sets`)."""
    now = uow.clock()
    for name, key, row in staging.missing("zone", "zones"):
        uow.session.add(ZoneRow(name=name, name_key=key, criticality=Criticality.MEDIUM.value,
                                created_at=now))
        uow.session.flush()
        uow.record(caller, "zones.created", "zone", name, after={
            "name": name, "criticality": "medium", "reason": f"named by inventory {report.source}, row {row}"})
        report.created_zones.append(name)


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceFilter:
    """The `devices list` filters; every one is optional and they combine with AND."""

    kind: str | None = None
    zone: str | None = None  # includes the zones inside it
    brand: str | None = None
    manufacturer: str | None = None  # true manufacturer, through relabels
    firmware: str | None = None
    org: str | None = None  # responsible for any duty
    tag: str | None = None
    seen_before: datetime | None = None
    seen_after: datetime | None = None
    never_seen: bool = False
    online: bool | None = None  # True: reporting now; False: went offline (never-seen excluded)
    id_prefix: str | None = None
    failing_rule: str | None = None  # failing this rule (not waived) in the caller's latest audit


@dataclass(frozen=True)
class DeviceView:
    id: str
    kind: str
    brand: str
    model: str
    manufacturer: str  # true manufacturer
    origin_model: str
    origin_status: str
    firmware_version: str
    zone: str
    serial: str | None
    mac: str | None
    address: str | None
    protocol: str | None
    responsible: dict[str, str | None]  # duty → organization name
    owner: str | None
    end_of_support: str | None
    last_seen: datetime | None
    credential_state: str
    online: bool | None  # None: never reported
    record: dict[str, Any]  # the full inventory row (export form)


@dataclass(frozen=True)
class Page:
    items: list[DeviceView]
    total: int | None  # counted on the first page only: a count per page is costly at 1M devices
    next_after: str | None
    total_is_floor: bool = False  # counting stopped at the cap: at least `total` devices match


_Owner = aliased(OrganizationRow)
_ORG_ALIASES = {col: aliased(OrganizationRow) for col in stg.ORG_REFERENCES if col != "owner"}


def _device_query(session: Session, caller: Caller, flt: DeviceFilter) -> Any:
    scope = require_device_details(caller)
    q = (
        select(DeviceRow, ProductRow, ZoneRow.name, _Owner.name,
               *[a.name for a in _ORG_ALIASES.values()], DeviceStateRow)
        .join(ProductRow, ProductRow.id == DeviceRow.product_id)
        .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
        .outerjoin(_Owner, _Owner.id == DeviceRow.owner_id)
        .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
    )
    for col, alias in _ORG_ALIASES.items():
        q = q.outerjoin(alias, alias.id == getattr(DeviceRow, stg.ORG_REFERENCES[col]))
    q = q.where(scope_clause(session, scope))
    return apply_filter(session, q, flt, caller)


def apply_filter(session: Session, q: Any, flt: DeviceFilter, caller: Caller | None = None) -> Any:
    """`q` narrowed by every filter given (`failing_rule` reads the caller's latest audit)."""
    if flt.failing_rule:
        assert caller is not None, "a failing_rule filter needs the caller whose audit it reads"
        from cityward.services.audit import failing_devices  # polars and the policy engine: only for this filter

        q = q.where(DeviceRow.id.in_(failing_devices(session, caller, flt.failing_rule)))
    if flt.kind:
        q = q.where(DeviceRow.kind == flt.kind.lower())
    if flt.zone:
        zone_id = zone_id_named(session, flt.zone)
        parents = zone_tree(session)
        inside = [z for z in parents if zone_id in zone_chain(z, parents)]
        q = q.where(DeviceRow.zone_id.in_(inside))
    if flt.brand:
        q = q.where(ProductRow.brand_key == product_key(flt.brand, "")[0])
    if flt.manufacturer:
        q = q.where(ProductRow.origin_brand_key == product_key(flt.manufacturer, "")[0])
    if flt.firmware:
        q = q.where(DeviceRow.firmware_version == flt.firmware)
    if flt.org:
        org_id = org_id_named(session, flt.org)
        assert org_id is not None
        q = q.where(responsible_clause(session, org_id, frozenset(Duty)))
    if flt.tag:
        q = q.where(DeviceRow.tags.contains(f";{flt.tag};", autoescape=True))
    if flt.seen_before:
        q = q.where(DeviceStateRow.last_seen < _utc(flt.seen_before, "seen_before"))
    if flt.seen_after:
        q = q.where(DeviceStateRow.last_seen >= _utc(flt.seen_after, "seen_after"))
    if flt.never_seen:
        q = q.where(DeviceStateRow.device_id.is_(None))
    if flt.online is not None:
        q = q.where(DeviceStateRow.online.is_(flt.online))
    if flt.id_prefix:
        q = q.where(DeviceRow.id.startswith(flt.id_prefix, autoescape=True))
    return q


def _utc(at: datetime, name: str) -> datetime:
    """SQLite compares stored UTC times as text: a bound time must be UTC too (naive = UTC)."""
    try:
        return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise InvalidInput(f"{name} is out of range",
                           [Problem("out of range once converted to UTC", field=name)]) from None


class _Responsibility:
    """Resolves effective duty holders for a page of devices with two small queries."""

    def __init__(self, session: Session) -> None:
        self.parents = zone_tree(session)
        self.assignments = {
            (z, Duty(d)): o for z, d, o in session.execute(
                select(ZoneResponsibilityRow.zone_id, ZoneResponsibilityRow.duty,
                       ZoneResponsibilityRow.org_id))
        }
        self.names = dict(session.execute(select(OrganizationRow.id, OrganizationRow.name)).all())

    def of(self, device: DeviceRow) -> dict[str, str | None]:
        overrides = {d: getattr(device, DEVICE_COLUMN[d]) for d in Duty}
        held = effective_responsibility(overrides, device.zone_id, self.parents, self.assignments)
        return {d.value: self.names.get(o) if o is not None else None for d, o in held.items()}


def _view(row: Any, resp: _Responsibility) -> DeviceView:
    device, product, zone, owner = row[:4]
    state: DeviceStateRow | None = row[-1]
    record = _record(row)
    return DeviceView(
        id=device.id, kind=device.kind, brand=product.brand, model=product.model,
        manufacturer=product.origin_brand, origin_model=product.origin_model,
        origin_status=product.origin_status, firmware_version=device.firmware_version,
        zone=zone, serial=device.serial, mac=device.mac, address=device.address,
        protocol=device.protocol, responsible=resp.of(device), owner=owner,
        end_of_support=product.end_of_support.isoformat() if product.end_of_support else None,
        last_seen=state.last_seen if state else None,
        credential_state=state.credential_state if state else "unknown",
        online=state.online if state else None, record=record,
    )


def _record(row: Any) -> dict[str, Any]:
    device, product, zone, owner, installer, maintainer, supplier = row[:7]
    return {
        "id": device.id, "kind": device.kind, "brand": product.brand, "model": product.model,
        "firmware_version": device.firmware_version, "zone": zone, "serial": device.serial,
        "mac": device.mac, "hardware_version": device.hardware_version,
        "address": device.address, "protocol": device.protocol, "latitude": device.latitude,
        "longitude": device.longitude, "owner": owner, "installer": installer,
        "maintainer": maintainer, "supplier": supplier,
        "installed_at": device.installed_at.isoformat() if device.installed_at else None,
        "tags": [t for t in (device.tags or "").split(";") if t],
    }


def list_devices(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    flt: DeviceFilter = DeviceFilter(),
    *,
    limit: int = 100,
    after: str | None = None,
    count_up_to: int | None = None,
) -> Page:
    """One page of devices in id order (keyset pagination: pass `next_after` back as `after`).

    The first page carries the number of matching devices; with `count_up_to`, counting stops
    there (a person reads "more than 10,000" as well as the exact figure, which at a million
    devices costs a scan of every match)."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    with uow_factory() as uow:
        q = _device_query(uow.session, caller, flt)
        total, floor = None, False
        if after is None:
            counted = q.with_only_columns(DeviceRow.id)
            if count_up_to is not None:
                counted = counted.limit(count_up_to + 1)
            total = int(uow.session.scalar(select(func.count()).select_from(counted.subquery())) or 0)
            if count_up_to is not None and total > count_up_to:
                total, floor = count_up_to, True
        else:
            q = q.where(DeviceRow.id > after)
        rows = uow.session.execute(q.order_by(DeviceRow.id).limit(limit + 1)).all()
        resp = _Responsibility(uow.session)
        items = [_view(r, resp) for r in rows[:limit]]
    return Page(items, total, items[-1].id if len(rows) > limit else None, floor)


def get_device(uow_factory: UnitOfWorkFactory, caller: Caller, device_id: str) -> DeviceView:
    with uow_factory() as uow:
        q = _device_query(uow.session, caller, DeviceFilter()).where(DeviceRow.id == device_id)
        row = uow.session.execute(q).first()
        if row is None:  # also when it exists outside the caller's scope: no existence leaks
            raise NotFound(f"device {device_id!r} not found")
        return _view(row, _Responsibility(uow.session))


def export_devices(
    uow_factory: UnitOfWorkFactory,
    caller: Caller,
    out: IO[str],
    fmt: FileFormat,
    flt: DeviceFilter = DeviceFilter(),
) -> int:
    """Stream the devices in scope to `out` in the inventory format; returns the count."""
    with uow_factory() as uow:
        q = _device_query(uow.session, caller, flt).order_by(DeviceRow.id)
        result = uow.session.execute(q.execution_options(yield_per=5000))

        def rows() -> Iterator[dict[str, Any]]:
            for row in result:
                yield _record(row)

        writer = write_csv if fmt is FileFormat.CSV else write_json
        return writer(rows(), out)


@dataclass(frozen=True)
class SummaryRow:
    manufacturer: str
    brand: str
    model: str
    firmware_version: str
    devices: int


def summarize_devices(
    uow_factory: UnitOfWorkFactory, caller: Caller, flt: DeviceFilter = DeviceFilter()
) -> list[SummaryRow]:
    """Device counts by true manufacturer, model and firmware: what a manufacturer may see."""
    scope = device_scope(caller)
    with uow_factory() as uow:
        q = (
            select(ProductRow.origin_brand, ProductRow.brand, ProductRow.model,
                   DeviceRow.firmware_version, func.count())
            .join(ProductRow, ProductRow.id == DeviceRow.product_id)
            .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
            .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
            .where(scope_clause(uow.session, scope))
            .group_by(ProductRow.origin_brand, ProductRow.brand, ProductRow.model,
                      DeviceRow.firmware_version)
            .order_by(ProductRow.origin_brand, ProductRow.brand, ProductRow.model,
                      DeviceRow.firmware_version)
        )
        q = apply_filter(uow.session, q, flt, caller)
        return [SummaryRow(*r) for r in uow.session.execute(q)]

