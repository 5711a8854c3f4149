"""Advisories matched to the fleet as set joins in polars, never a loop over devices.

The fleet is first reduced to its *classes*: distinct (product, firmware) pairs (a million devices
are a few thousand classes). Classes meet entries on identity — the product's own vendor and model,
and its true origin's (so a relabeled product inherits its origin's advisories) — then on version:
each entry's intervals are sortable keys (domain.advisory_versions), compared with the class's
firmware key of the same scheme. Per class and CVE, precedence: any not-affected or fixed statement
that matches wins over affected ones. Matches are stored per class; KEV, EPSS and a device's own
exposure and zone give the priority when they are read (`device_priority`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cityward.domain.advisories import INSECURE_SERVICES, PRIORITY_LABELS, PRIORITY_WEIGHTS, UNKNOWN_CVSS

INTERVAL = pl.Struct({"lo": pl.String, "lo_incl": pl.Boolean, "hi": pl.String, "hi_incl": pl.Boolean})
CLASS_SCHEMA = {"product_id": pl.Int64, "firmware": pl.String, "semver_key": pl.String, "vendor_key_fw": pl.String}
IDENTITY_SCHEMA = {"product_id": pl.Int64, "vendor_key": pl.String, "product_key": pl.String, "via": pl.String}
ENTRY_SCHEMA = {
    "entry_id": pl.Int64, "advisory_id": pl.Int64, "cve": pl.String, "vendor_key": pl.String,
    "product_key": pl.String, "model_pattern": pl.String, "status": pl.String, "intervals": pl.List(INTERVAL),
    "scheme": pl.String, "fixed_version": pl.String, "remediation": pl.String, "cvss": pl.Float64,
    "exploited": pl.Boolean, "purl_key": pl.String,
}
# A class running a firmware release whose SBOM lists a component (its version's keys).
COMPONENT_SCHEMA = {"product_id": pl.Int64, "firmware": pl.String, "purl_key": pl.String, "semver_key": pl.String,
                    "vendor_key_fw": pl.String, "via": pl.String}
CLEARED_SCHEMA = {"product_id": pl.Int64, "firmware": pl.String, "cve": pl.String}  # by the SBOM's own VEX
# A class running a catalog release whose image hash a statement names.
HASH_SCHEMA = {"product_id": pl.Int64, "firmware": pl.String, "entry_id": pl.Int64, "via": pl.String}
CLASS_MATCH_SCHEMA = {"product_id": pl.Int64, "firmware": pl.String, "cve": pl.String, "advisory_id": pl.Int64,
                      "entry_id": pl.Int64, "via": pl.String, "fixed_version": pl.String, "remediation": pl.String,
                      "cvss": pl.Float64, "exploited": pl.Boolean}
STORED_SCHEMA: dict[str, Any] = {**CLASS_MATCH_SCHEMA, "matched_at": pl.Datetime("us", "UTC")}  # = vuln_matches


def _in_interval(key: str) -> pl.Expr:
    k = pl.col(key)
    low_ok = pl.col("lo").is_null() | (k > pl.col("lo")) | ((k == pl.col("lo")) & pl.col("lo_incl"))
    high_ok = pl.col("hi").is_null() | (k < pl.col("hi")) | ((k == pl.col("hi")) & pl.col("hi_incl"))
    unbounded = pl.col("lo").is_null() & pl.col("hi").is_null()  # every version, even one without a key
    return (k.is_not_null() & low_ok & high_ok) | unbounded


def _in_range(hits: pl.DataFrame, unique_by: list[str]) -> pl.DataFrame:
    """The rows whose version key (of the statement's scheme) falls in one of its intervals (or
    that cover every version), once each."""
    keyed = hits.with_columns(
        pl.when(pl.col("scheme") == "semver").then(pl.col("semver_key")).otherwise(pl.col("vendor_key_fw"))
        .alias("fw_key"))
    every_version = keyed.filter(pl.col("intervals").is_null()).drop("intervals", "fw_key")
    ranged = (keyed.filter(pl.col("intervals").is_not_null()).explode("intervals").unnest("intervals")
              .filter(_in_interval("fw_key")).drop("lo", "lo_incl", "hi", "hi_incl", "fw_key")
              .unique(unique_by, keep="first"))
    return pl.concat([every_version, ranged.select(every_version.columns)])


def match_classes(classes: pl.DataFrame, identities: pl.DataFrame, entries: pl.DataFrame,
                  components: pl.DataFrame | None = None, cleared_by_sbom: pl.DataFrame | None = None,
                  by_hash: pl.DataFrame | None = None) -> pl.DataFrame:
    """(product, firmware) classes affected by each CVE, after precedence (CLASS_MATCH_SCHEMA).

    `components`: classes whose firmware's SBOM lists a package (COMPONENT_SCHEMA), matched to
    statements about that package by PURL key and the component's own version;
    `cleared_by_sbom`: (class, CVE) pairs the SBOM's VEX declares not affected;
    `by_hash`: classes running an image whose hash a statement names (HASH_SCHEMA)."""
    cls = classes.join(identities, on="product_id")
    device_entries = entries.filter(pl.col("vendor_key").is_not_null() & pl.col("product_key").is_not_null())
    exact = cls.join(device_entries.filter(pl.col("model_pattern").is_null()), on=["vendor_key", "product_key"])
    patterned = (cls.join(entries.filter(pl.col("model_pattern").is_not_null() & pl.col("vendor_key").is_not_null()),
                          on="vendor_key", suffix="_entry")
                 .filter(pl.col("product_key").str.contains(pl.col("model_pattern")))
                 .drop("product_key_entry"))
    matched = _in_range(pl.concat([exact, patterned.select(exact.columns)]),
                        ["product_id", "firmware", "entry_id", "via"])
    if components is not None and components.height:
        # Each distinct package version meets its statements once; only what matched is joined back
        # to the (many) classes whose SBOMs list it.
        version_keys = ["purl_key", "semver_key", "vendor_key_fw"]
        versions = components.select(version_keys).unique()
        package_entries = entries.filter(pl.col("purl_key").is_not_null())
        in_range = _in_range(versions.join(package_entries, on="purl_key"), [*version_keys, "entry_id"])
        by_package = (components.join(in_range, on=version_keys, nulls_equal=True)
                      .unique(["product_id", "firmware", "entry_id"], keep="first"))
        matched = pl.concat([matched, by_package.select(matched.columns)])
    if by_hash is not None and by_hash.height:
        hashed = by_hash.join(entries, on="entry_id").with_columns(
            pl.lit(None, pl.String).alias("semver_key"), pl.lit(None, pl.String).alias("vendor_key_fw"))
        matched = pl.concat([matched, hashed.select(matched.columns)])
    if matched.height == 0:
        return pl.DataFrame(schema=CLASS_MATCH_SCHEMA)
    keys = ["product_id", "firmware", "cve"]
    cleared = matched.filter(pl.col("status").is_in(["not_affected", "fixed"])).select(keys)
    if cleared_by_sbom is not None and cleared_by_sbom.height:
        cleared = pl.concat([cleared, cleared_by_sbom.select(keys)])
    cleared = cleared.unique()
    affected = (matched.filter(pl.col("status") == "affected").join(cleared, on=keys, how="anti")
                .sort(["cvss", "entry_id"], descending=[True, False], nulls_last=True))
    return (affected.group_by(keys, maintain_order=True)
            .agg(pl.col("advisory_id").first(), pl.col("entry_id").first(),
                 pl.col("via").sort().first(),  # "origin" before "product": say when it came through the OEM
                 pl.col("fixed_version").drop_nulls().first(), pl.col("remediation").drop_nulls().first(),
                 pl.col("cvss").max(), pl.col("exploited").any())
            .select(list(CLASS_MATCH_SCHEMA)).cast(CLASS_MATCH_SCHEMA))  # type: ignore[arg-type]


def exposed(remote_json: str, services_json: str) -> pl.Expr:
    """Remote access enabled or an insecure service running, from device_states' JSON columns."""
    remote = pl.col(remote_json).str.json_decode(pl.List(pl.String))
    services = pl.col(services_json).str.json_decode(pl.List(pl.String))
    return ((remote.list.len() > 0).fill_null(False)
            | services.list.eval(pl.element().is_in(INSECURE_SERVICES)).list.any().fill_null(False))


def device_priority(frame: pl.DataFrame) -> pl.DataFrame:
    """Stored matches joined to their devices and to KEV and EPSS (`cvss`, `exploited`, `kev`,
    `ransomware`, `kev_due`, `epss`, `matched_at`, `exposed`, `zone_criticality`) gain `priority`,
    `label` and `due`."""
    w = PRIORITY_WEIGHTS
    kev = pl.col("kev").fill_null(False)
    score = (pl.col("cvss").fill_null(UNKNOWN_CVSS) * w["cvss"]
             + kev.cast(pl.Float64) * w["kev"]
             + pl.col("ransomware").fill_null(False).cast(pl.Float64) * w["ransomware"]
             + (pl.col("exploited") & ~kev).cast(pl.Float64) * w["exploited"]
             + pl.col("epss").fill_null(0.0) * w["epss"]
             + pl.col("exposed").fill_null(False).cast(pl.Float64) * w["exposed"]
             + pl.when(pl.col("zone_criticality") == "critical").then(w["critical_zone"])
             .when(pl.col("zone_criticality") == "high").then(w["critical_zone"] / 2).otherwise(0.0))
    label: pl.Expr = pl.lit(PRIORITY_LABELS[-1][0])
    days: pl.Expr = pl.lit(PRIORITY_LABELS[-1][2])
    for name, floor, within in reversed(PRIORITY_LABELS[:-1]):
        label = pl.when(pl.col("priority") >= floor).then(pl.lit(name)).otherwise(label)
        days = pl.when(pl.col("priority") >= floor).then(pl.lit(within)).otherwise(days)
    return (frame.with_columns(score.clip(0.0, 100.0).round(1).alias("priority"), kev.alias("kev"),
                               pl.col("ransomware").fill_null(False))
            .with_columns(label.alias("label"),
                          pl.when(pl.col("kev") & pl.col("kev_due").is_not_null()).then(pl.col("kev_due"))
                          .otherwise(pl.col("matched_at").dt.date() + pl.duration(days=days)).alias("due")))


def empty_matches() -> pl.DataFrame:
    return pl.DataFrame(schema=STORED_SCHEMA)
