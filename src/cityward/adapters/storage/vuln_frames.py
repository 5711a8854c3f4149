"""The fleet and the advisories as frames for matching (adapters/vuln_polars.py does the joins).

Shared by the vulnerability service (which stores matches) and the audit's fact table (which asks,
fresh, which devices a known exploited CVE affects): reading only what a set of CVEs touches — its
statements, and the devices of the products those statements name — is what makes re-matching one
advisory cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from cityward.adapters import vuln_polars as vp
from cityward.adapters.storage.frames import read_frame
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    DeviceRow,
    DeviceStateRow,
    EpssScoreRow,
    KevEntryRow,
    ProductRow,
    ZoneRow,
)
from cityward.domain import advisory_versions as av
from cityward.domain.advisories import INSECURE_SERVICES, match_key, model_key
from cityward.domain.products import VersionScheme

_CHUNK = 500


def chunks(values: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def _entries(s: Session, cves: set[str] | None) -> pl.DataFrame:
    cols = (AdvisoryEntryRow.id, AdvisoryEntryRow.advisory_id, AdvisoryEntryRow.cve, AdvisoryEntryRow.vendor_key,
            AdvisoryEntryRow.product_key, AdvisoryEntryRow.model_pattern, AdvisoryEntryRow.status,
            cast(AdvisoryEntryRow.intervals, Text), AdvisoryEntryRow.scheme, AdvisoryEntryRow.fixed_version,
            AdvisoryEntryRow.remediation, AdvisoryEntryRow.cvss, AdvisoryEntryRow.exploited)
    schema: dict[str, Any] = {**vp.ENTRY_SCHEMA, "intervals": pl.String}
    if cves is None:
        frames = [read_frame(s, select(*cols), schema)]
    else:
        frames = [read_frame(s, select(*cols).where(AdvisoryEntryRow.cve.in_(part)), schema)
                  for part in chunks(sorted(cves))] or [pl.DataFrame(schema=schema)]
    raw = pl.concat(frames)
    # JSON null (every version) and SQL NULL both mean no intervals.
    return raw.with_columns(pl.when(pl.col("intervals").is_in(["null"]) | pl.col("intervals").is_null())
                            .then(None).otherwise(pl.col("intervals")).str.json_decode(pl.List(vp.INTERVAL))
                            .alias("intervals"))


def _identities(s: Session, entries: pl.DataFrame) -> pl.DataFrame:
    """Each product's identities that some entry names: its own label, and its true origin's."""
    exact = set(entries.filter(pl.col("model_pattern").is_null()).select("vendor_key", "product_key").iter_rows())
    patterns = [(v, re.compile(p)) for v, p in entries.filter(pl.col("model_pattern").is_not_null())
                .select("vendor_key", "model_pattern").unique().iter_rows()]
    rows: list[tuple[int, str | None, str | None, str]] = []
    for pid, brand, model, obrand, omodel in s.execute(select(
            ProductRow.id, ProductRow.brand, ProductRow.model, ProductRow.origin_brand, ProductRow.origin_model)):
        own = (match_key(brand), model_key(model))
        origin = (match_key(obrand), model_key(omodel))
        for via, key in (("product", own), ("origin", origin)):
            if via == "origin" and origin == own:
                continue
            if key in exact or any(key[0] == v and rx.search(key[1] or "") for v, rx in patterns):
                rows.append((pid, key[0], key[1], via))
    return pl.DataFrame(rows, schema=vp.IDENTITY_SCHEMA, orient="row")


def _devices(s: Session, product_ids: list[int] | None) -> pl.DataFrame:
    """Devices of those products (all when None): firmware as reported, else as inventoried."""
    q = (select(DeviceRow.id, DeviceRow.product_id,
                func.coalesce(DeviceStateRow.firmware_version, DeviceRow.firmware_version),
                cast(DeviceStateRow.remote_access, Text), cast(DeviceStateRow.services, Text), ZoneRow.criticality)
         .join(ZoneRow, ZoneRow.id == DeviceRow.zone_id)
         .outerjoin(DeviceStateRow, DeviceStateRow.device_id == DeviceRow.id))
    schema = {"device_id": pl.String, "product_id": pl.Int64, "firmware": pl.String, "remote": pl.String,
              "services": pl.String, "zone_criticality": pl.String}
    if product_ids is None:
        raw = read_frame(s, q, schema)
    else:
        raw = pl.concat([read_frame(s, q.where(DeviceRow.product_id.in_(part)), schema)
                         for part in chunks(product_ids)] or [pl.DataFrame(schema=schema)])
    remote = pl.col("remote").str.json_decode(pl.List(pl.String))
    services = pl.col("services").str.json_decode(pl.List(pl.String))
    exposed = ((remote.list.len() > 0).fill_null(False)
               | services.list.eval(pl.element().is_in(INSECURE_SERVICES)).list.any().fill_null(False))
    return raw.with_columns(exposed.alias("exposed")).select(list(vp.DEVICE_SCHEMA))


def _classes(devices: pl.DataFrame) -> pl.DataFrame:
    pairs = devices.select("product_id", "firmware").unique()
    firmware = pairs.get_column("firmware").unique().to_list()
    semver = {v: av.sort_key(v, VersionScheme.SEMVER) for v in firmware if v is not None}
    vendor = {v: av.sort_key(v, VersionScheme.VENDOR) for v in firmware if v is not None}
    return pairs.with_columns(
        pl.col("firmware").replace_strict(semver, default=None, return_dtype=pl.String).alias("semver_key"),
        pl.col("firmware").replace_strict(vendor, default=None, return_dtype=pl.String).alias("vendor_key_fw"))


def _feeds(s: Session) -> tuple[pl.DataFrame, pl.DataFrame]:
    kev = read_frame(s, select(KevEntryRow.cve, KevEntryRow.due_date, KevEntryRow.ransomware), vp.KEV_SCHEMA)
    epss = read_frame(s, select(EpssScoreRow.cve, EpssScoreRow.epss), vp.EPSS_SCHEMA)
    return kev, epss


def compute(s: Session, cves: set[str] | None, now: datetime) -> tuple[pl.DataFrame, int]:
    """The matches for `cves` (all CVEs when None), and how many classes were examined."""
    entries = _entries(s, cves)
    if entries.height == 0:
        return vp.empty_matches(), 0
    identities = _identities(s, entries)
    if identities.height == 0:
        return vp.empty_matches(), 0
    product_ids = None if cves is None else sorted(set(identities.get_column("product_id").to_list()))
    devices = _devices(s, product_ids)
    classes = _classes(devices)
    class_matches = vp.match_classes(classes, identities, entries)
    kev, epss = _feeds(s)
    return vp.device_matches(devices, class_matches, kev, epss, now), classes.height
