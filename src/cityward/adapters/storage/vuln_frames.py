"""The fleet and the advisories as frames for matching (adapters/vuln_polars.py does the joins),
and the stored matches kept up to date by writing only what changed.

Shared by the vulnerability service (which stores matches) and the audit's fact table (which asks,
fresh, which classes a known exploited CVE affects). The fleet is read as its (product, running
firmware) classes with their device counts, straight from the index on devices(product_id,
firmware_running); reading only what a set of CVEs touches — its statements, and the classes of the
products those statements name — is what makes re-matching one advisory cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import ColumnElement, Text, and_, bindparam, cast, delete, func, select, text
from sqlalchemy.orm import Session

from cityward.adapters import vuln_polars as vp
from cityward.adapters.storage.frames import read_frame, write_frame
from cityward.adapters.storage.models import (
    AdvisoryEntryRow,
    DeviceRow,
    FirmwareReleaseRow,
    ProductRow,
    SbomComponentRow,
    SbomVexRow,
    VendorAliasRow,
    VulnMatchRow,
)
from cityward.domain import advisory_versions as av
from cityward.domain.advisories import model_key
from cityward.domain.model_names import model_variants
from cityward.domain.products import VersionScheme, product_key
from cityward.domain.vendors import DEFAULT_ALIASES, alias_map, canonical_vendor, vendor_key

_CHUNK = 500


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
    aliases = vendor_aliases(s)
    if aliases:  # stored keys are as the advisory wrote the vendor; an alias may say whom it means
        raw = raw.with_columns(pl.col("vendor_key").replace(aliases))
    # JSON null (every version) and SQL NULL both mean no intervals.
    return raw.with_columns(pl.when(pl.col("intervals").is_in(["null"]) | pl.col("intervals").is_null())
                            .then(None).otherwise(pl.col("intervals")).str.json_decode(pl.List(vp.INTERVAL))
                            .alias("intervals"))


def _identities(s: Session, entries: pl.DataFrame) -> pl.DataFrame:
    """Each product's identities that some entry names: its own label, and its true origin's.
    Keys come from the same Python functions as the advisories' (domain.vendors.vendor_key,
    domain.advisories.model_key), computed once per distinct brand and model — a catalog has a few
    thousand — and mapped column-wise, so the two sides cannot drift apart."""
    products = read_frame(s, select(ProductRow.id, ProductRow.brand, ProductRow.model, ProductRow.origin_brand,
                                    ProductRow.origin_model, ProductRow.platform),
                          {"product_id": pl.Int64, "brand": pl.String, "model": pl.String, "obrand": pl.String,
                           "omodel": pl.String, "platform": pl.String})
    aliases = vendor_aliases(s)
    named_vendors = entries.get_column("vendor_key").drop_nulls().unique()
    own = _keyed(products, "brand", "model", "product", aliases, vendors=named_vendors)
    origin = _keyed(products, "obrand", "omodel", "origin", aliases, vendors=named_vendors)
    # A product that declares its firmware platform is also known by it, under its own brand; a
    # relabel runs its origin's firmware, so it is known by the origin's platform too.
    declared = products.filter(pl.col("platform").is_not_null())
    inherited = (products.filter(pl.col("platform").is_null())
                 .join(declared.select(pl.col("brand").alias("obrand"), pl.col("model").alias("omodel"),
                                       pl.col("platform").alias("oplatform")), on=["obrand", "omodel"])
                 .with_columns(pl.col("oplatform").alias("platform")))
    platform = pl.concat([
        _keyed(declared, "brand", "platform", "platform", aliases, variants=False, vendors=named_vendors),
        _keyed(inherited, "obrand", "platform", "platform", aliases, variants=False, vendors=named_vendors)])
    both = pl.concat([own, origin.join(own, on=["product_id", "vendor_key", "product_key"], how="anti")])
    both = pl.concat([both, platform.join(both, on=["product_id", "vendor_key", "product_key"], how="anti")])
    named = entries.filter(pl.col("model_pattern").is_null()).select("vendor_key", "product_key").unique()
    exact = both.join(named, on=["vendor_key", "product_key"], how="semi")
    patterns = entries.filter(pl.col("model_pattern").is_not_null()).select("vendor_key", "model_pattern").unique()
    patterned = (both.join(patterns, on="vendor_key")
                 .filter(pl.col("product_key").str.contains(pl.col("model_pattern")))
                 .drop("model_pattern"))
    return pl.concat([exact, patterned]).unique().select(list(vp.IDENTITY_SCHEMA)).cast(vp.IDENTITY_SCHEMA)  # type: ignore[arg-type]


def stored_aliases(s: Session) -> list[tuple[str, str]]:
    """(alias, vendor): the shipped ones, then the city's (which win where both name one alias)."""
    return [*DEFAULT_ALIASES, *((a, v) for a, v in s.execute(select(VendorAliasRow.alias, VendorAliasRow.vendor)))]


def vendor_aliases(s: Session) -> dict[str, str]:
    """Vendor key → the vendor key it means."""
    return alias_map(stored_aliases(s))


def _keyed(products: pl.DataFrame, brand: str, model: str, via: str, aliases: Mapping[str, str],
           variants: bool = True, vendors: pl.Series | None = None) -> pl.DataFrame:
    """(product_id, vendor_key, product_key, via) of one side of each product (label or origin),
    one row per name the model goes by (`model_names.model_variants`) unless `variants` is off."""
    side = products.select("product_id", pl.col(brand).alias("b"), pl.col(model).alias("m")).with_columns(
        _mapped("b", lambda b: canonical_vendor(vendor_key(b), aliases)).alias("vendor_key"))
    if vendors is not None:  # only the vendors some entry names: a new advisory names one or two
        side = side.filter(pl.col("vendor_key").is_in(vendors.implode()))
    pairs = side.select("b", "m").unique().drop_nulls()
    rows: dict[str, list[str | None]] = {"b": [], "m": [], "product_key": []}
    for b, m in pairs.iter_rows():
        for key in (model_variants(b, m) if variants else (model_key(m),)):
            rows["b"].append(b)
            rows["m"].append(m)
            rows["product_key"].append(key)
    lookup = pl.DataFrame(rows, schema={"b": pl.String, "m": pl.String, "product_key": pl.String})
    return (side.join(lookup, on=["b", "m"], how="left", nulls_equal=True)
            .select("product_id", "vendor_key", "product_key", pl.lit(via).alias("via")))


def _mapped(column: str, key: Callable[[str], str | None]) -> pl.Expr:
    """`key` of each value, computed once per distinct value."""
    return pl.col(column).map_batches(
        lambda series: series.replace_strict({v: key(v) for v in series.unique().drop_nulls().to_list()},
                                             default=None, return_dtype=pl.String),
        return_dtype=pl.String)


def _classes(s: Session, product_ids: list[int] | None) -> pl.DataFrame:
    """Each (product, running firmware) of those products (all when None), with its device count
    and version keys (CLASS_SCHEMA + devices)."""
    q = (select(DeviceRow.product_id, DeviceRow.firmware_running, func.count())
         .group_by(DeviceRow.product_id, DeviceRow.firmware_running))
    schema = {"product_id": pl.Int64, "firmware": pl.String, "devices": pl.Int64}
    if product_ids is None:
        pairs = read_frame(s, q, schema)
    else:
        pairs = pl.concat([read_frame(s, q.where(DeviceRow.product_id.in_(part)), schema)
                           for part in chunks(product_ids)] or [pl.DataFrame(schema=schema)])
    semver, vendor = _keys(pairs.get_column("firmware").unique().to_list())
    return pairs.with_columns(
        pl.col("firmware").replace_strict(semver, default=None, return_dtype=pl.String).alias("semver_key"),
        pl.col("firmware").replace_strict(vendor, default=None, return_dtype=pl.String).alias("vendor_key_fw"))


def _keys(versions: Iterable[str | None]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Each version's sortable key under both schemes (computed once per distinct string)."""
    distinct = {v for v in versions if v is not None}
    return ({v: av.sort_key(v, VersionScheme.SEMVER) for v in distinct},
            {v: av.sort_key(v, VersionScheme.VENDOR) for v in distinct})


_RELEASE_KEYS = {"release_id": pl.Int64, "brand_key": pl.String, "model_key": pl.String, "release": pl.String}
_SBOM_SCHEMA = {"release_id": pl.Int64, "brand_key": pl.String, "model_key": pl.String, "release": pl.String,
                "purl_key": pl.String, "version": pl.String}


def _sbom_components(s: Session, entries: pl.DataFrame, everything: bool) -> pl.DataFrame:
    """SBOM components some component statement names, with their release's catalog key and
    version (_SBOM_SCHEMA); `everything`: all statements are being matched, so read every
    component once instead of by key."""
    keys = entries.get_column("purl_key").drop_nulls().unique()
    if keys.len() == 0:
        return pl.DataFrame(schema=_SBOM_SCHEMA)
    # Components alone (three narrow columns: millions of rows), releases apart (thousands).
    q = select(SbomComponentRow.release_id, SbomComponentRow.purl_key, SbomComponentRow.version)
    schema = {"release_id": pl.Int64, "purl_key": pl.String, "version": pl.String}
    if everything:
        found = read_frame(s, q.where(SbomComponentRow.purl_key.is_not(None)), schema).filter(
            pl.col("purl_key").is_in(keys.implode()))
    else:
        found = pl.concat([read_frame(s, q.where(SbomComponentRow.purl_key.in_(part)), schema)
                           for part in chunks(sorted(keys.to_list()))] or [pl.DataFrame(schema=schema)])
    if found.height == 0:
        return pl.DataFrame(schema=_SBOM_SCHEMA)
    releases = read_frame(s, select(FirmwareReleaseRow.id, FirmwareReleaseRow.brand_key, FirmwareReleaseRow.model_key,
                                    FirmwareReleaseRow.version), _RELEASE_KEYS)
    return found.join(releases, on="release_id").select(list(_SBOM_SCHEMA))


def _origins(s: Session) -> pl.DataFrame:
    """Each product's true origin as the firmware catalog keys it (brand_key, model_key)."""
    rows = [(pid, ob_key, product_key("", om)[1]) for pid, ob_key, om in s.execute(
        select(ProductRow.id, ProductRow.origin_brand_key, ProductRow.origin_model))]
    return pl.DataFrame(rows, schema={"product_id": pl.Int64, "brand_key": pl.String, "model_key": pl.String},
                        orient="row")


def _component_classes(s: Session, classes: pl.DataFrame, components: pl.DataFrame,
                       origins: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Classes running a release whose SBOM lists a named component (with the component's version
    keys), and the (class, CVE) pairs that SBOM's own VEX clears."""
    empty = (pl.DataFrame(schema={**vp.COMPONENT_SCHEMA}), pl.DataFrame(schema=vp.CLEARED_SCHEMA))
    if components.height == 0 or classes.height == 0:
        return empty
    releases = components.select("release_id", "brand_key", "model_key", "release").unique()
    link = (classes.select("product_id", "firmware").join(origins, on="product_id")
            .join(releases, left_on=["brand_key", "model_key", "firmware"],
                  right_on=["brand_key", "model_key", "release"])
            .select("product_id", "firmware", "release_id"))
    if link.height == 0:
        return empty
    semver, vendor = _keys(components.get_column("version").unique().to_list())
    found = (link.join(components.select("release_id", "purl_key", "version"), on="release_id")
             .with_columns(pl.col("version").replace_strict(semver, default=None, return_dtype=pl.String)
                           .alias("semver_key"),
                           pl.col("version").replace_strict(vendor, default=None, return_dtype=pl.String)
                           .alias("vendor_key_fw"),
                           pl.lit("component").alias("via"))
             .select(list(vp.COMPONENT_SCHEMA)))
    release_ids = sorted(set(link.get_column("release_id").to_list()))
    vex = pl.concat([read_frame(s, select(SbomVexRow.release_id, SbomVexRow.cve).where(SbomVexRow.release_id.in_(p)),
                                {"release_id": pl.Int64, "cve": pl.String}) for p in chunks(release_ids)])
    cleared = link.join(vex, on="release_id").select(list(vp.CLEARED_SCHEMA)).unique()
    return found, cleared


def _hashed_releases(s: Session, cves: set[str] | None) -> pl.DataFrame:
    """Catalog releases whose image SHA-256 some statement names: (release keys, entry_id)."""
    q = (select(AdvisoryEntryRow.id, cast(AdvisoryEntryRow.hashes, Text))
         .where(cast(AdvisoryEntryRow.hashes, Text).not_in(["[]", "null"])))
    schema = {"entry_id": pl.Int64, "hashes": pl.String}
    if cves is None:
        raw = read_frame(s, q, schema)
    else:
        raw = pl.concat([read_frame(s, q.where(AdvisoryEntryRow.cve.in_(p)), schema) for p in chunks(sorted(cves))]
                        or [pl.DataFrame(schema=schema)])
    named = (raw.with_columns(pl.col("hashes").str.json_decode(pl.List(pl.String))).explode("hashes")
             .select("entry_id", pl.col("hashes").str.to_lowercase().alias("sha256")).drop_nulls())
    if named.height == 0:
        return pl.DataFrame(schema={**_RELEASE_KEYS, "entry_id": pl.Int64})
    digests = sorted(set(named.get_column("sha256").to_list()))
    q_rel = select(FirmwareReleaseRow.id, FirmwareReleaseRow.brand_key, FirmwareReleaseRow.model_key,
                   FirmwareReleaseRow.version, FirmwareReleaseRow.sha256)
    rel_schema = {**_RELEASE_KEYS, "sha256": pl.String}
    releases = pl.concat([read_frame(s, q_rel.where(FirmwareReleaseRow.sha256.in_(p)), rel_schema)
                          for p in chunks(digests)])
    return releases.join(named, on="sha256").drop("sha256")


def _hash_classes(classes: pl.DataFrame, hashed: pl.DataFrame, origins: pl.DataFrame) -> pl.DataFrame:
    """Classes running a catalog release whose image hash a statement names (HASH_SCHEMA): the hash
    identifies the version, so no range is consulted."""
    if hashed.height == 0 or classes.height == 0:
        return pl.DataFrame(schema=vp.HASH_SCHEMA)
    return (classes.select("product_id", "firmware").join(origins, on="product_id")
            .join(hashed, left_on=["brand_key", "model_key", "firmware"],
                  right_on=["brand_key", "model_key", "release"])
            .select("product_id", "firmware", "entry_id", pl.lit("hash").alias("via")).unique())


def compute(s: Session, cves: set[str] | None, now: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The class matches for `cves` (all CVEs when None; STORED_SCHEMA), and the classes examined
    with their device counts."""
    entries = _entries(s, cves)
    no_classes = pl.DataFrame(schema={**vp.CLASS_SCHEMA, "devices": pl.Int64})
    if entries.height == 0:
        return vp.empty_matches(), no_classes
    identities = _identities(s, entries)
    sbom = _sbom_components(s, entries, everything=cves is None)
    hashed = _hashed_releases(s, cves)
    if identities.height == 0 and sbom.height == 0 and hashed.height == 0:
        return vp.empty_matches(), no_classes
    origins = _origins(s) if sbom.height or hashed.height else pl.DataFrame(
        schema={"product_id": pl.Int64, "brand_key": pl.String, "model_key": pl.String})
    if cves is None:
        product_ids = None
    else:
        release_keys = pl.concat([sbom.select("brand_key", "model_key"), hashed.select("brand_key", "model_key")])
        running = origins.join(release_keys.unique(), on=["brand_key", "model_key"], how="semi")
        product_ids = sorted(set(identities.get_column("product_id").to_list())
                             | set(running.get_column("product_id").to_list()))
    classes = _classes(s, product_ids)
    plain = classes.select(list(vp.CLASS_SCHEMA))
    components, cleared = _component_classes(s, plain, sbom, origins)
    by_hash = _hash_classes(plain, hashed, origins)
    class_matches = vp.match_classes(plain, identities, entries, components, cleared, by_hash)
    stamped = class_matches.with_columns(pl.lit(now).alias("matched_at"))
    return stamped.cast(vp.STORED_SCHEMA), classes  # type: ignore[arg-type]


# --- storing: only the difference -----------------------------------------------------------------

_KEYS = ["product_id", "firmware", "cve"]
_CVE_INDEX = "ix_vuln_matches_cve"  # as the model and migration 0006 name it
_VALUES = [c for c in vp.STORED_SCHEMA if c not in _KEYS and c != "matched_at"]


@dataclass(frozen=True)
class StoreOutcome:
    inserted: int
    updated: int
    deleted: int
    unchanged: int


def _stored_keys(s: Session, cves: set[str] | None) -> pl.DataFrame:
    """The keys, fingerprints and first-match times of the stored matches of `cves` (all when None)."""
    schema: dict[str, Any] = {"product_id": pl.Int64, "firmware": pl.String, "cve": pl.String,
                              "fingerprint": pl.Int64, "matched_at": pl.Datetime("us", "UTC")}
    q = select(*(getattr(VulnMatchRow, c) for c in schema))
    if cves is None:
        return read_frame(s, q, schema)
    return pl.concat([read_frame(s, q.where(VulnMatchRow.cve.in_(part)), schema)
                      for part in chunks(sorted(cves))] or [pl.DataFrame(schema=schema)])


def _fingerprint() -> pl.Expr:
    # polars' hash is not promised stable across polars versions: after an upgrade that changes it,
    # every row looks changed once and is rewritten (keeping matched_at), which is still correct.
    return pl.struct(_VALUES).hash(seed=0).reinterpret(signed=True).alias("fingerprint")


def store(s: Session, found: pl.DataFrame, cves: set[str] | None, *, bulk_from: int = 50_000) -> StoreOutcome:
    """Make the stored matches of `cves` (all when None) equal `found`, in the caller's
    transaction, writing only rows that appear, change or disappear. A row that changes keeps its
    `matched_at` (the class has been affected since then). Readers keep seeing the previous matches
    until the commit: nothing is locked beyond the rows written."""
    old = _stored_keys(s, cves)
    new = found.with_columns(_fingerprint())
    columns = [*vp.STORED_SCHEMA, "fingerprint"]
    both = new.join(old, on=_KEYS, how="inner", suffix="_old")
    differs = pl.col("fingerprint") != pl.col("fingerprint_old")
    changed = both.filter(differs).with_columns(pl.col("matched_at_old").alias("matched_at")).select(columns)
    added = new.join(old, on=_KEYS, how="anti").select(columns)
    gone = old.join(new, on=_KEYS, how="anti")
    if gone.height + changed.height + added.height >= max(old.height // 2, bulk_from):
        # Much of it differs: emptying the scope and writing it anew is cheaper than row by row.
        kept = both.filter(~differs).with_columns(pl.col("matched_at_old").alias("matched_at")).select(columns)
        rows = pl.concat([kept, changed, added]).sort(_KEYS)
        # SQLite, the whole table: rows in key order append to the primary key's tree, and the CVE
        # index is built once afterwards instead of grown at random (WAL readers are not blocked;
        # PostgreSQL would lock readers out for a DROP INDEX, and its COPY needs no help).
        rebuild = cves is None and s.get_bind().dialect.name == "sqlite"
        if cves is None:
            s.execute(delete(VulnMatchRow))
        else:
            for part in chunks(sorted(cves)):
                s.execute(delete(VulnMatchRow).where(VulnMatchRow.cve.in_(part)))
        if rebuild:
            s.execute(text(f"DROP INDEX IF EXISTS {_CVE_INDEX}"))
        write_frame(s, VulnMatchRow.__tablename__, rows)
        if rebuild:
            s.execute(text(f"CREATE INDEX {_CVE_INDEX} ON {VulnMatchRow.__tablename__} (cve)"))
    else:
        doomed = pl.concat([gone.select(_KEYS), changed.select(_KEYS)])
        if doomed.height:
            s.connection().execute(  # Core: the ORM has no executemany DELETE
                delete(VulnMatchRow).where(VulnMatchRow.product_id == bindparam("b_p"),
                                           VulnMatchRow.firmware == bindparam("b_f"),
                                           VulnMatchRow.cve == bindparam("b_c")),
                [{"b_p": p, "b_f": f, "b_c": c} for p, f, c in doomed.iter_rows()])
        write_frame(s, VulnMatchRow.__tablename__, pl.concat([changed, added]).sort(_KEYS))
    return StoreOutcome(inserted=added.height, updated=changed.height, deleted=gone.height,
                        unchanged=both.height - changed.height)


def on_device() -> ColumnElement[bool]:
    """The join of stored matches to the devices they affect."""
    return and_(VulnMatchRow.product_id == DeviceRow.product_id, VulnMatchRow.firmware == DeviceRow.firmware_running)
