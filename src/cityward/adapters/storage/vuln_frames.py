"""The fleet and the advisories as frames for matching (adapters/vuln_polars.py does the joins).

Shared by the vulnerability service (which stores matches) and the audit's fact table (which asks,
fresh, which devices a known exploited CVE affects): reading only what a set of CVEs touches — its
statements, and the devices of the products those statements name — is what makes re-matching one
advisory cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Text, cast, delete, func, select, text
from sqlalchemy.orm import Session

from cityward.adapters import vuln_polars as vp
from cityward.adapters.storage.frames import read_frame, write_frame
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    DeviceRow,
    DeviceStateRow,
    EpssScoreRow,
    FirmwareReleaseRow,
    KevEntryRow,
    ProductRow,
    SbomComponentRow,
    SbomVexRow,
    VulnMatchRow,
    ZoneRow,
)
from cityward.domain import advisory_versions as av
from cityward.domain.advisories import INSECURE_SERVICES
from cityward.domain.products import VersionScheme, product_key

_CHUNK = 500
_CVE_INDEX = "ix_vuln_matches_cve"  # as the migration names it


def chunks(values: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def _entries(s: Session, cves: set[str] | None) -> pl.DataFrame:
    cols = (AdvisoryEntryRow.id, AdvisoryEntryRow.advisory_id, AdvisoryEntryRow.cve, AdvisoryEntryRow.vendor_key,
            AdvisoryEntryRow.product_key, AdvisoryEntryRow.model_pattern, AdvisoryEntryRow.status,
            cast(AdvisoryEntryRow.intervals, Text), AdvisoryEntryRow.scheme, AdvisoryEntryRow.fixed_version,
            AdvisoryEntryRow.remediation, AdvisoryEntryRow.cvss, AdvisoryEntryRow.exploited,
            AdvisoryEntryRow.purl_key)
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
    """Each product's identities that some entry names: its own label, and its true origin's.
    Keys are computed column-wise (the same rules as domain.advisories.match_key/model_key), so
    re-matching one advisory does not pay a Python loop over the whole catalog."""
    products = read_frame(s, select(ProductRow.id, ProductRow.brand, ProductRow.model, ProductRow.origin_brand,
                                    ProductRow.origin_model),
                          {"product_id": pl.Int64, "brand": pl.String, "model": pl.String, "obrand": pl.String,
                           "omodel": pl.String})
    own = products.select("product_id", _vendor_key("brand"), _model_key("model"), pl.lit("product").alias("via"))
    origin = products.select("product_id", _vendor_key("obrand"), _model_key("omodel"), pl.lit("origin").alias("via"))
    both = pl.concat([own, origin.join(own, on=["product_id", "vendor_key", "product_key"], how="anti")])
    named = entries.filter(pl.col("model_pattern").is_null()).select("vendor_key", "product_key").unique()
    exact = both.join(named, on=["vendor_key", "product_key"], how="semi")
    patterns = entries.filter(pl.col("model_pattern").is_not_null()).select("vendor_key", "model_pattern").unique()
    patterned = (both.join(patterns, on="vendor_key")
                 .filter(pl.col("product_key").str.contains(pl.col("model_pattern")))
                 .drop("model_pattern"))
    return pl.concat([exact, patterned]).unique().select(list(vp.IDENTITY_SCHEMA)).cast(vp.IDENTITY_SCHEMA)  # type: ignore[arg-type]


def _vendor_key(column: str) -> pl.Expr:
    return pl.col(column).str.to_lowercase().str.replace_all(r"[^0-9a-z]+", "").alias("vendor_key")


def _model_key(column: str) -> pl.Expr:
    return (pl.col(column).str.to_lowercase().str.strip_chars().str.replace(r"[_-]?(firmware|fw)$", "")
            .str.replace_all(r"[^0-9a-z]+", "").alias("product_key"))


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
    semver, vendor = _keys(pairs.get_column("firmware").unique().to_list())
    return pairs.with_columns(
        pl.col("firmware").replace_strict(semver, default=None, return_dtype=pl.String).alias("semver_key"),
        pl.col("firmware").replace_strict(vendor, default=None, return_dtype=pl.String).alias("vendor_key_fw"))


def _keys(versions: Iterable[str | None]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Each version's sortable key under both schemes (computed once per distinct string)."""
    distinct = {v for v in versions if v is not None}
    return ({v: av.sort_key(v, VersionScheme.SEMVER) for v in distinct},
            {v: av.sort_key(v, VersionScheme.VENDOR) for v in distinct})


def _sbom_releases(s: Session, entries: pl.DataFrame) -> tuple[list[tuple[Any, ...]], dict[int, tuple[str, str]]]:
    """SBOM components some component statement names — (release, brand key, model key, version,
    purl key, component version) — and each product's true-origin catalog key."""
    keys = sorted(set(entries.get_column("purl_key").drop_nulls().to_list()))
    rows: list[tuple[Any, ...]] = []
    for part in chunks(keys):
        rows += s.execute(
            select(FirmwareReleaseRow.id, FirmwareReleaseRow.brand_key, FirmwareReleaseRow.model_key,
                   FirmwareReleaseRow.version, SbomComponentRow.purl_key, SbomComponentRow.version)
            .join(SbomComponentRow, SbomComponentRow.release_id == FirmwareReleaseRow.id)
            .where(SbomComponentRow.purl_key.in_(part))).all()
    origins = {pid: (ob_key, product_key("", om)[1]) for pid, ob_key, om in s.execute(
        select(ProductRow.id, ProductRow.origin_brand_key, ProductRow.origin_model))} if rows else {}
    return rows, origins


def _component_classes(s: Session, classes: pl.DataFrame, rows: list[tuple[Any, ...]],
                       origins: dict[int, tuple[str, str]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Classes running a release whose SBOM lists a named component (with the component's version
    keys), and the (class, CVE) pairs that SBOM's own VEX clears."""
    schema = {"product_id": pl.Int64, "firmware": pl.String, "release_id": pl.Int64, "purl_key": pl.String,
              "version": pl.String}
    empty = (pl.DataFrame(schema={**vp.COMPONENT_SCHEMA}), pl.DataFrame(schema=vp.CLEARED_SCHEMA))
    if not rows or classes.height == 0:
        return empty
    by_release = {(b, m, v): rid for rid, b, m, v, _k, _cv in rows}
    linked = [(pid, fw, by_release[(*origins[pid], fw)]) for pid, fw in classes.select("product_id", "firmware")
              .iter_rows() if pid in origins and (*origins[pid], fw) in by_release]
    if not linked:
        return empty
    link = pl.DataFrame(linked, schema={"product_id": pl.Int64, "firmware": pl.String, "release_id": pl.Int64},
                        orient="row")
    comps = pl.DataFrame([(rid, k, cv) for rid, _b, _m, _v, k, cv in rows],
                         schema={"release_id": pl.Int64, "purl_key": pl.String, "version": pl.String}, orient="row")
    semver, vendor = _keys(comps.get_column("version").to_list())
    found = (link.join(comps, on="release_id").select(list(schema))
             .with_columns(pl.col("version").replace_strict(semver, default=None, return_dtype=pl.String)
                           .alias("semver_key"),
                           pl.col("version").replace_strict(vendor, default=None, return_dtype=pl.String)
                           .alias("vendor_key_fw"),
                           pl.lit("component").alias("via"))
             .select(list(vp.COMPONENT_SCHEMA)))
    vex = read_frame(s, select(SbomVexRow.release_id, SbomVexRow.cve).where(
        SbomVexRow.release_id.in_(sorted(set(link.get_column("release_id").to_list())))),
        {"release_id": pl.Int64, "cve": pl.String})
    cleared = link.join(vex, on="release_id").select(list(vp.CLEARED_SCHEMA))
    return found, cleared


def _feeds(s: Session, cves: set[str] | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """KEV and EPSS rows for `cves` (all when None)."""
    kev_q = select(KevEntryRow.cve, KevEntryRow.due_date, KevEntryRow.ransomware)
    epss_q = select(EpssScoreRow.cve, EpssScoreRow.epss)
    if cves is None:
        return read_frame(s, kev_q, vp.KEV_SCHEMA), read_frame(s, epss_q, vp.EPSS_SCHEMA)
    parts = list(chunks(sorted(cves)))
    kev = pl.concat([read_frame(s, kev_q.where(KevEntryRow.cve.in_(p)), vp.KEV_SCHEMA) for p in parts]
                    or [pl.DataFrame(schema=vp.KEV_SCHEMA)])
    epss = pl.concat([read_frame(s, epss_q.where(EpssScoreRow.cve.in_(p)), vp.EPSS_SCHEMA) for p in parts]
                     or [pl.DataFrame(schema=vp.EPSS_SCHEMA)])
    return kev, epss


def compute(s: Session, cves: set[str] | None, now: datetime) -> tuple[pl.DataFrame, int]:
    """The matches for `cves` (all CVEs when None), and how many classes were examined."""
    entries = _entries(s, cves)
    if entries.height == 0:
        return vp.empty_matches(), 0
    identities = _identities(s, entries)
    sbom_rows, origins = _sbom_releases(s, entries)
    if identities.height == 0 and not sbom_rows:
        return vp.empty_matches(), 0
    if cves is None:
        product_ids = None
    else:
        release_keys = {(b, m) for _r, b, m, _v, _k, _cv in sbom_rows}
        product_ids = sorted(set(identities.get_column("product_id").to_list())
                             | {pid for pid, key in origins.items() if key in release_keys})
    devices = _devices(s, product_ids)
    classes = _classes(devices)
    components, cleared = _component_classes(s, classes, sbom_rows, origins)
    class_matches = vp.match_classes(classes, identities, entries, components, cleared)
    kev, epss = _feeds(s, cves)
    return vp.device_matches(devices, class_matches, kev, epss, now), classes.height


def replace_all_matches(s: Session, dialect: str, found: pl.DataFrame) -> None:
    """Every stored match replaced by `found`, in the caller's transaction. Millions of rows load
    several times faster into a table without its indexes, built once afterwards, than through
    them; on PostgreSQL TRUNCATE also spares deleting the old rows one by one. Both are
    transactional, but they hold an exclusive lock: readers of the matches wait until the commit
    (about 20 s at a million devices, bench/README.md) instead of seeing the old ones. Storing
    (product, firmware, CVE) classes instead of devices would make this 20 times smaller."""
    table = VulnMatchRow.__tablename__
    if dialect == "postgresql":
        s.execute(text(f"TRUNCATE {table}"))
        s.execute(text(f"DROP INDEX IF EXISTS {_CVE_INDEX}"))
        s.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS pk_{table}"))
    else:
        s.execute(delete(VulnMatchRow))  # SQLite empties a table without a WHERE in one step
        s.execute(text(f"DROP INDEX IF EXISTS {_CVE_INDEX}"))
    if found.height:
        write_frame(s, table, found)
    if dialect == "postgresql":
        s.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (device_id, cve)"))
    s.execute(text(f"CREATE INDEX {_CVE_INDEX} ON {table} (cve)"))
