"""The fleet as one fact table: a single query (inventory ⋈ catalog ⋈ zone ⋈ reported state), then
derived facts computed column-wise in polars. Never one ORM object per device."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from cityward.adapters.policy_polars import FACT_SCHEMA, VKEY, with_version_keys
from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.frames import read_frame
from cityward.adapters.storage.models import (
    AdvisoryRow,
    DesiredConfigRow,
    DeviceHistoryRow,
    DeviceRow,
    DeviceStateRow,
    KevEntryRow,
    ProductRow,
    ZoneResponsibilityRow,
    ZoneRow,
)
from cityward.adapters.storage.scoping import scope_clause, zone_tree
from cityward.domain.access import DeviceScope
from cityward.domain.products import product_key
from cityward.domain.responsibility import DEVICE_COLUMN, Duty, zone_chain, zone_holder
from cityward.domain.telemetry import announced_differences

_DAY = 86_400.0


def _days(column: str, now: datetime) -> pl.Expr:
    return (pl.lit(now) - pl.col(column)).dt.total_seconds() / _DAY


def load_facts(session: Session, scope: DeviceScope, now: datetime,
               prohibited: Iterable[str] = ()) -> pl.DataFrame:
    """Every device in scope with every fact of domain.policy.facts, plus helper columns:
    `_zone_id`, `_product` ("Brand Model"), `_resp_<duty>` (organization id)."""
    q = (
        select(
            DeviceRow.id, DeviceRow.kind, ProductRow.brand, ProductRow.model, ProductRow.origin_brand,
            ProductRow.origin_status, ZoneRow.name.label("zone"), ZoneRow.criticality, DeviceRow.tags,
            DeviceRow.protocol, DeviceRow.firmware_version.label("inv_firmware"), ProductRow.min_firmware,
            DeviceRow.product_id,
            ProductRow.end_of_support, DeviceRow.installed_at, DeviceRow.zone_id,
            *[getattr(DeviceRow, DEVICE_COLUMN[d]).label(f"_override_{d.value}") for d in Duty],
            DeviceStateRow.online, DeviceStateRow.last_seen, DeviceStateRow.credential_state,
            DeviceStateRow.password_changed_at, cast(DeviceStateRow.services, Text).label("services_json"),
            cast(DeviceStateRow.remote_access, Text).label("remote_json"), DeviceStateRow.cert_expires_at,
            DeviceStateRow.quarantined, DeviceStateRow.firmware_version.label("state_firmware"),
            DeviceStateRow.config_hash, ProductRow.brand_key, ProductRow.origin_brand_key,
        )
        .join(ProductRow, ProductRow.id == DeviceRow.product_id)
        .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
        .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id)
        .where(scope_clause(session, scope))
    )
    raw = read_frame(session, q, _raw_schema())
    if raw.height == 0:
        return with_version_keys(pl.DataFrame(schema={**FACT_SCHEMA, "_zone_id": pl.Int64, "_product": pl.String,
                                                      **{f"_resp_{d.value}": pl.Int64 for d in Duty}}))
    today = now.date()
    banned = sorted({product_key(m, "")[0] for m in prohibited})
    frame = raw.select(
        pl.col("id"), pl.col("kind"), pl.col("brand"), pl.col("model"),
        pl.col("origin_brand").alias("manufacturer"), pl.col("origin_status"), pl.col("zone"),
        pl.col("criticality").alias("zone_criticality"),
        pl.col("tags").str.strip_chars(";").str.split(";").list.eval(pl.element().filter(pl.element() != ""))
        .alias("tags"),
        pl.col("protocol"),
        pl.coalesce("state_firmware", "inv_firmware").alias("firmware_version"),
        pl.col("min_firmware"),
        (pl.col("end_of_support") < pl.lit(today)).alias("end_of_support_passed"),
        ((pl.lit(today) - pl.col("installed_at")).dt.total_days().cast(pl.Float64)).alias("age"),
        pl.col("online").cast(pl.Boolean),
        _days("last_seen", now).alias("last_seen_age"),
        pl.when(pl.col("online").is_null()).then(None).otherwise(pl.col("credential_state"))
        .alias("credential_state"),
        _days("password_changed_at", now).alias("password_age"),
        pl.col("services_json").str.json_decode(pl.List(pl.String)).alias("services"),
        pl.col("remote_json").str.json_decode(pl.List(pl.String)).alias("remote_access"),
        (-_days("cert_expires_at", now)).alias("cert_expires_in"),
        pl.col("quarantined").cast(pl.Boolean),
        _config_drift(session).alias("config_drift"),
        pl.col("origin_brand").str.to_lowercase().str.strip_chars().is_in(banned).alias("manufacturer_prohibited"),
        _known_exploited(session, now).alias("known_exploited"),
        _identity_mismatch(session).alias("identity_mismatch"),
        pl.lit(None, dtype=pl.Boolean).alias("firmware_signed"),  # firmware catalog
        pl.col("zone_id").alias("_zone_id"),
        (pl.col("brand") + " " + pl.col("model")).alias("_product"),
        *[pl.col(f"_override_{d.value}") for d in Duty],
    )
    frame = with_version_keys(frame.with_columns(
        [pl.col(c).cast(t) for c, t in FACT_SCHEMA.items() if c in frame.columns]))
    frame = frame.with_columns(
        pl.when(pl.col("min_firmware" + VKEY).is_null() | pl.col("firmware_version" + VKEY).is_null()).then(None)
        .otherwise(pl.col("firmware_version" + VKEY) < pl.col("min_firmware" + VKEY))
        .alias("firmware_below_minimum"))
    return with_responsibility(session, frame)


def _known_exploited(session: Session, now: datetime) -> pl.Expr:
    """True when the device's firmware, as it reports it now, is affected by a CVE in CISA KEV
    (matched fresh, for the KEV CVEs only: stored matches know only the firmware versions devices
    ran when they were made); null (unknown) until both advisories and the KEV catalog have been
    imported, so the rule does not pass blind. Over the raw columns of load_facts."""
    kev = set(session.scalars(select(KevEntryRow.cve)).all())
    if not kev or session.scalar(select(func.count()).select_from(AdvisoryRow)) == 0:
        return pl.lit(None, dtype=pl.Boolean)
    found, _classes = vuln_frames.compute(session, kev, now)
    affected = found.select(_class_key(pl.col("product_id"), pl.col("firmware"))).to_series().unique()
    return _class_key(pl.col("product_id"), pl.coalesce("state_firmware", "inv_firmware")).is_in(affected.implode())


def _identity_mismatch(session: Session) -> pl.Expr:
    """True when the device's last announced brand, serial or MAC (an `identity` history fact,
    written by the ingestor only when a hello differs) still differs from the inventory; else null
    for a device that never reported. Over the raw columns of load_facts."""
    claimed: dict[str, Any] = {}
    for device_id, announced in session.execute(
            select(DeviceHistoryRow.device_id, DeviceHistoryRow.new)
            .where(DeviceHistoryRow.fact == "identity").order_by(DeviceHistoryRow.id)):
        claimed[device_id] = announced
    claimed = {d: a for d, a in claimed.items() if a}
    mismatched: list[str] = []
    ids = sorted(claimed)
    for start in range(0, len(ids), 500):
        for device_id, serial, mac, brand in session.execute(
                select(DeviceRow.id, DeviceRow.serial, DeviceRow.mac, ProductRow.brand)
                .join(ProductRow, ProductRow.id == DeviceRow.product_id)
                .where(DeviceRow.id.in_(ids[start:start + 500]))):
            if announced_differences(claimed[device_id], brand=brand, serial=serial, mac=mac):
                mismatched.append(device_id)
    return (pl.when(pl.col("id").is_in(mismatched)).then(True)
            .when(pl.col("online").is_null()).then(None).otherwise(False))


def _class_key(product_id: pl.Expr, firmware: pl.Expr) -> pl.Expr:
    return pl.concat_str([product_id.cast(pl.String), firmware], separator="\x1f")


def _config_drift(session: Session) -> pl.Expr:
    """True when the device reported a configuration other than the desired one that applies to
    it (the first desired configuration, by age, whose selector matches); null when none applies
    or it never reported one. Over the raw columns of load_facts."""
    parents = zone_tree(session)
    names = dict(session.execute(select(ZoneRow.id, ZoneRow.name)).all())
    desired = session.execute(select(DesiredConfigRow.selector, DesiredConfigRow.config_hash)
                              .order_by(DesiredConfigRow.id.desc())).all()
    drift = pl.lit(None, dtype=pl.Boolean)
    for selector, digest in desired:  # newest first, so the oldest match ends up outermost
        match = pl.lit(True)
        if "kind" in selector:
            match &= pl.col("kind") == selector["kind"].lower()
        if "zone" in selector:
            top = next((z for z, n in names.items() if n == selector["zone"]), None)
            inside = [z for z in parents if top is not None and top in zone_chain(z, parents)]
            match &= pl.col("zone_id").is_in(inside)
        if "brand" in selector:
            match &= pl.col("brand_key") == product_key(selector["brand"], "")[0]
        if "manufacturer" in selector:
            match &= pl.col("origin_brand_key") == product_key(selector["manufacturer"], "")[0]
        if "firmware" in selector:
            match &= pl.col("inv_firmware") == selector["firmware"]
        if "tag" in selector:
            match &= pl.col("tags").str.contains(f";{selector['tag']};", literal=True).fill_null(False)
        drift = pl.when(match).then(pl.col("config_hash") != digest).otherwise(drift)
    return drift


def _raw_schema() -> dict[str, Any]:
    """The query's columns, in select order, with their types."""
    text, utc = pl.String, pl.Datetime("us", "UTC")
    return {
        **dict.fromkeys(("id", "kind", "brand", "model", "origin_brand", "origin_status", "zone", "criticality",
                         "tags", "protocol", "inv_firmware", "min_firmware"), text),
        "product_id": pl.Int64,
        "end_of_support": pl.Date, "installed_at": pl.Date, "zone_id": pl.Int64,
        **{f"_override_{d.value}": pl.Int64 for d in Duty},
        "online": pl.Boolean, "last_seen": utc, "credential_state": text, "password_changed_at": utc,
        "services_json": text, "remote_json": text, "cert_expires_at": utc, "quarantined": pl.Boolean,
        "state_firmware": text, "config_hash": text, "brand_key": text, "origin_brand_key": text,
    }


def with_responsibility(session: Session, frame: pl.DataFrame,
                        duties: tuple[Duty, ...] = tuple(Duty)) -> pl.DataFrame:
    """`_resp_<duty>` from `_override_<duty>` and `_zone_id`: the device's override, else the holder
    of its zone (nearest zone up)."""
    parents = zone_tree(session)
    assignments = {(z, Duty(d)): o for z, d, o in session.execute(
        select(ZoneResponsibilityRow.zone_id, ZoneResponsibilityRow.duty, ZoneResponsibilityRow.org_id))}
    holders: dict[str, Any] = {}
    for duty in duties:
        by_zone = {z: zone_holder(z, duty, parents, assignments) for z in parents}
        holders[duty.value] = by_zone
    return frame.with_columns(
        pl.coalesce(pl.col(f"_override_{d.value}"),
                    pl.col("_zone_id").replace_strict(holders[d.value], default=None, return_dtype=pl.Int64))
        .alias(f"_resp_{d.value}") for d in duties
    ).drop([f"_override_{d.value}" for d in duties])

