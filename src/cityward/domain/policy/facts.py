"""The device facts a policy condition may use: their names, types and meaning (docs/policy.md).

A fact is null when it is not known (a device that never reported has no services). Conditions
use three-valued logic, as SQL does: a comparison with null is null, and a rule fails a device
only when its condition is true, so missing data never produces a finding by accident (rules
that care about missing data say so with `is null`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FactType(StrEnum):
    STR = "text"
    NUMBER = "number"
    BOOL = "boolean"
    AGE = "age"  # a span of days (negative: in the past, for "expires in"); compared with 30d, 12h, 2w
    VERSION = "version"  # compared by version order, not as text
    LIST = "list"  # a list of text, e.g. services


@dataclass(frozen=True)
class Fact:
    name: str
    type: FactType
    description: str
    values: frozenset[str] | None = None  # the closed set of values, when there is one


_KINDS = frozenset({"streetlight", "camera", "waste_bin", "traffic_controller", "env_sensor", "gateway",
                    "parking_sensor", "ev_charger", "other"})

FACTS: dict[str, Fact] = {f.name: f for f in [
    Fact("id", FactType.STR, "device id"),
    Fact("kind", FactType.STR, "device kind", _KINDS),
    Fact("brand", FactType.STR, "brand on the label"),
    Fact("model", FactType.STR, "model on the label"),
    Fact("manufacturer", FactType.STR, "true manufacturer, through every OEM/ODM relabel"),
    Fact("origin_status", FactType.STR, "whether the true origin is known",
         frozenset({"original", "relabeled", "unknown"})),
    Fact("zone", FactType.STR, "zone the device stands in"),
    Fact("zone_criticality", FactType.STR, "criticality of that zone",
         frozenset({"low", "medium", "high", "critical"})),
    Fact("tags", FactType.LIST, "inventory tags"),
    Fact("protocol", FactType.STR, "how cityward reaches it", frozenset({"mqtt", "http"})),
    Fact("firmware_version", FactType.VERSION, "firmware running (reported, else from the inventory)"),
    Fact("min_firmware", FactType.VERSION, "minimum firmware the catalog sets for the product"),
    Fact("firmware_below_minimum", FactType.BOOL, "firmware older than the product minimum, by its version scheme"),
    Fact("end_of_support_passed", FactType.BOOL, "the product's end of support is in the past"),
    Fact("age", FactType.AGE, "time since installation"),
    Fact("online", FactType.BOOL, "reporting now (null: never reported)"),
    Fact("last_seen_age", FactType.AGE, "time since the device last said anything"),
    Fact("credential_state", FactType.STR, "admin credential as reported",
         frozenset({"default", "weak", "unique", "unknown"})),
    Fact("password_age", FactType.AGE, "time since the admin password last changed"),
    Fact("services", FactType.LIST, "network services enabled (telnet, ftp, upnp, http, ssh, ...)"),
    Fact("remote_access", FactType.LIST, "remote-access channels enabled (vendor-cloud, vpn, ...)"),
    Fact("cert_expires_in", FactType.AGE, "time until the first certificate expires (negative: expired)"),
    Fact("quarantined", FactType.BOOL, "in quarantine"),
    Fact("config_drift", FactType.BOOL, "reported configuration differs from the desired one"),
    Fact("manufacturer_prohibited", FactType.BOOL, "true manufacturer is on the city's prohibited list"),
    Fact("known_exploited", FactType.BOOL, "firmware has a known exploited vulnerability"),
    Fact("identity_mismatch", FactType.BOOL,
         "the device announced a brand, serial or MAC other than the inventory's (swapped, cloned or misrecorded)"),
    Fact("firmware_signed", FactType.BOOL, "the running firmware's signature was verified"),
]}
