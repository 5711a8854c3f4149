"""Advisories normalized: whatever the source (CSAF, CVE JSON 5), each statement becomes one
`Entry` of (product identity, version range, status, remediation) for one CVE, so the fleet is
matched by one set join whatever the format.

Identity keys are deliberately loose where sources are: models compare on letters and digits
only, case-folded (`DS-2CD2142FWD-I` = `ds2cd2142fwdi`; letters beyond ASCII kept), a CPE's product
drops the `_firmware` suffix NVD gives firmware of a device (`ds-2cd2142fwd-i_firmware`), and
vendors compare by `domain.vendors.vendor_key` (legal forms, accents and mojibake aside)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from cityward.domain.vendors import vendor_key
from cityward.errors import Problem

CVE_ID = re.compile(r"CVE-\d{4}-\d{4,}")
_NOT_ALNUM = re.compile(r"[\W_]+")  # letters and digits of any script
_FIRMWARE_SUFFIX = re.compile(r"[_-]?(firmware|fw)$")
MAX_ENTRIES = 100_000  # per document: more is a hostile or broken document, not an advisory


class Status(StrEnum):
    AFFECTED = "affected"
    NOT_AFFECTED = "not_affected"
    FIXED = "fixed"
    UNDER_INVESTIGATION = "under_investigation"


# CSAF product_status categories → our status. `recommended` names a fixed version.
CSAF_STATUS = {
    "first_affected": Status.AFFECTED, "known_affected": Status.AFFECTED, "last_affected": Status.AFFECTED,
    "known_not_affected": Status.NOT_AFFECTED, "fixed": Status.FIXED, "first_fixed": Status.FIXED,
    "recommended": Status.FIXED, "under_investigation": Status.UNDER_INVESTIGATION,
}


def match_key(text: str | None) -> str | None:
    """Vendor or model as matching compares it: letters and digits, case-folded."""
    if text is None:
        return None
    key = _NOT_ALNUM.sub("", text.lower())
    return key or None


def model_pattern(model: str) -> str:
    """`DS-2DF*X(T3)` → `^ds2df.*xt3$`: a regex over model keys (letters and digits only)."""
    return "^" + ".*".join(re.escape(model_key(part) or "") for part in model.split("*")) + "$"


def model_key(text: str | None) -> str | None:
    """A model or CPE product: as `match_key`, without a trailing `_firmware`."""
    if text is None:
        return None
    return match_key(_FIRMWARE_SUFFIX.sub("", text.lower().strip()))


@dataclass(frozen=True)
class Cpe:
    part: str  # h (hardware), o (operating system / firmware), a (application)
    vendor: str
    product: str
    version: str | None  # None for * or -


def parse_cpe(text: str) -> Cpe | None:
    """CPE 2.3 formatted strings and CPE 2.2 URIs; None if it is neither."""
    if text.startswith("cpe:2.3:"):
        parts = re.split(r"(?<!\\):", text)
        if len(parts) < 6:
            return None
        part, vendor, product, version = parts[2], parts[3], parts[4], parts[5]
    elif text.startswith("cpe:/"):
        parts = text[5:].split(":")
        if len(parts) < 3:
            return None
        part, vendor, product = parts[0], parts[1], parts[2]
        version = parts[3] if len(parts) > 3 else "*"
    else:
        return None
    if part not in ("h", "o", "a") or not vendor or vendor == "*" or not product or product == "*":
        return None
    return Cpe(part, _unescape(vendor), _unescape(product),
               None if version in ("*", "-", "") else _unescape(version))


def _unescape(value: str) -> str:
    """CPE 2.3 escapes punctuation with a backslash."""
    return value.replace("\\", "")


@dataclass(frozen=True)
class Identity:
    """Who the statement is about. A device matches on vendor + model (its own label or any product
    up its OEM/ODM chain); a component (SBOM) matches on its PURL or CPE."""

    vendor: str | None = None
    product: str | None = None  # the model, or the product name when no model number is given
    model_pattern: str | None = None  # a model number with `*` wildcards: a regex over model keys
    purl: str | None = None
    cpe: str | None = None
    hashes: tuple[str, ...] = ()

    @property
    def vendor_key(self) -> str | None:
        return vendor_key(self.vendor)

    @property
    def product_key(self) -> str | None:
        return model_key(self.product)


@dataclass(frozen=True)
class Entry:
    cve: str
    identity: Identity
    status: Status
    versions: str | None = None  # as written; None: every version
    intervals: tuple[tuple[str | None, bool, str | None, bool], ...] | None = None  # sortable keys
    scheme: str = "vendor"
    justification: str | None = None
    remediation: str | None = None
    remediation_detail: str | None = None
    remediation_url: str | None = None
    fixed_version: str | None = None
    cvss: float | None = None
    cvss_vector: str | None = None
    exploited: bool = False


@dataclass(frozen=True)
class Advisory:
    source: str  # csaf | cve5
    publisher: str
    doc_id: str
    title: str
    category: str
    revision: str
    released_at: datetime | None
    updated_at: datetime | None
    url: str | None
    entries: tuple[Entry, ...]
    unparsed: tuple[Problem, ...] = ()  # statements that could not be normalized: reported, not guessed
    cves: tuple[str, ...] = field(default=())

    @property
    def publisher_key(self) -> str:
        return match_key(self.publisher) or self.publisher


@dataclass(frozen=True)
class KevEntry:
    cve: str
    vendor: str
    product: str
    name: str
    date_added: date
    due_date: date | None
    ransomware: bool
    required_action: str | None


@dataclass(frozen=True)
class EpssScore:
    cve: str
    epss: float
    percentile: float


# --- priority ----------------------------------------------------------------------------------
# A score of 0-100 per affected device and CVE. Exploitation first: a CVE in CISA's KEV catalog is
# being exploited now, whatever its CVSS; EPSS is the probability of exploitation in the next 30
# days; CVSS is how bad it is if exploited; exposure and the zone say how much this device matters.

PRIORITY_WEIGHTS = {
    "cvss": 5.0,  # x CVSS base score (0-10), or 5.0 x 5.0 when no score is known
    "kev": 30.0,  # in CISA KEV
    "ransomware": 5.0,  # KEV: known ransomware campaign use
    "exploited": 10.0,  # the advisory itself says it is exploited (not in KEV)
    "epss": 15.0,  # x EPSS probability (0-1)
    "exposed": 5.0,  # remote access enabled or an insecure service running
    "critical_zone": 5.0,  # the device's zone is critical (high: half)
}
UNKNOWN_CVSS = 5.0
# (label, minimum score, days to fix when no KEV due date applies)
PRIORITY_LABELS = (("critical", 70.0, 7), ("high", 50.0, 30), ("medium", 30.0, 90), ("low", 0.0, 180))
INSECURE_SERVICES = ("telnet", "ftp", "http", "upnp")
