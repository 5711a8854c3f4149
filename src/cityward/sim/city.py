"""The demo city "Port Aurelia": zones, partners, a product catalog and a device inventory.

This module plays the city's suppliers and installers, who hand the city spreadsheets: it is
device-side and imports nothing from cityward outside `cityward.sim`. Everything is fictional
(names, brands, addresses) and deterministic: the same `seed` gives the same city and the same
rows, byte for byte.

The structure (zone tree, organizations, catalog with OEM/ODM relabel chains) is curated so the
demo tells a story; the seed varies catalog facts (minimum firmware, end-of-support dates) and
drives every device row. Rows are generated one at a time (`iter_device_rows`), so a million-
device inventory streams in constant memory.

    city = generate_city(devices=2000, seed=7)
    write_catalog_csv(city, Path("catalog.csv"))
    write_inventory_csv(city, Path("devices.csv"))
"""

from __future__ import annotations

import csv
import functools
import random
import zlib
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import accumulate
from operator import itemgetter
from pathlib import Path

from cityward.sim.profile import Profile, load_profile

# The inventory file's columns (docs/inventory.md), in order. Kept here rather than imported:
# the simulated city is the other side of the file format.
COLUMNS = (
    "id", "kind", "brand", "model", "firmware_version", "zone",
    "serial", "mac", "hardware_version", "address", "protocol", "latitude", "longitude",
    "owner", "installer", "maintainer", "supplier", "installed_at", "tags",
)
CATALOG_COLUMNS = ("brand", "model", "kind", "origin_brand", "origin_model", "end_of_support",
                   "min_firmware", "version_scheme", "upgrade_minutes", "platform")

CITY_NAME = "Port Aurelia"
CENTRE = (43.6512, 7.1843)  # the (fictional) city's centre: latitude, longitude
TODAY = date(2025, 6, 30)  # the demo's fixed "now", so rows never depend on the wall clock


@dataclass(frozen=True)
class DemoCity:
    name: str
    # (name, criticality low|medium|high|critical, parent name or None); parents come first.
    zones: list[tuple[str, str, str | None]]
    # (name, kind, brand or None); the city organization itself is not listed.
    orgs: list[tuple[str, str, str | None]]
    # (zone name, duty, organization name); duties: supply, install, maintain, credentials,
    # remote_access. Zones inside a zone inherit its assignments unless they have their own.
    zone_duties: list[tuple[str, str, str]]
    # Product catalog rows (CATALOG_COLUMNS, all strings); an origin comes before its relabels.
    catalog: list[dict[str, str]]
    devices: int
    # The profile it was generated from (kind mix, products, protocols); None: the default.
    profile: Profile | None = field(default=None, repr=False)


# --- the curated city ------------------------------------------------------------------------

# name, criticality, parent, centre offset (km north, km east), device weight, address slug
_ZONES: list[tuple[str, str, str | None, tuple[float, float], float, str]] = [
    (CITY_NAME, "medium", None, (0.0, 0.0), 0.0, "city"),
    ("Harbour", "high", CITY_NAME, (-2.2, 1.4), 10.0, "harbour"),
    ("Container Terminal", "high", "Harbour", (-3.1, 2.6), 6.0, "terminal"),
    ("Old Town", "medium", CITY_NAME, (0.3, -0.4), 12.0, "oldtown"),
    ("Cathedral Quarter", "medium", "Old Town", (0.6, -0.9), 5.0, "cathedral"),
    ("Northgate", "low", CITY_NAME, (3.4, 0.2), 16.0, "northgate"),
    ("Riverside", "low", CITY_NAME, (1.1, 3.0), 14.0, "riverside"),
    ("Tech Park", "medium", CITY_NAME, (2.5, -3.2), 9.0, "techpark"),
    ("Traffic Core", "critical", CITY_NAME, (0.0, 1.0), 7.0, "trafficcore"),
    ("Aurelia Tunnel", "critical", "Traffic Core", (-0.8, 2.0), 2.0, "tunnel"),
    ("Water Plant", "critical", CITY_NAME, (4.6, 4.1), 2.0, "waterplant"),
]

# Kind-specific zone weights that replace the zone's default weight.
_ZONE_KIND_WEIGHT: dict[str, dict[str, float]] = {
    "traffic_controller": {"Traffic Core": 30.0, "Aurelia Tunnel": 14.0, "Water Plant": 0.0,
                           "Container Terminal": 2.0},
    "camera": {"Traffic Core": 20.0, "Aurelia Tunnel": 12.0, "Water Plant": 8.0,
               "Harbour": 14.0, "Container Terminal": 12.0},
    "waste_bin": {"Aurelia Tunnel": 0.0, "Water Plant": 0.0, "Container Terminal": 2.0,
                  "Traffic Core": 1.0},
    "parking_sensor": {"Aurelia Tunnel": 0.0, "Water Plant": 0.0, "Old Town": 18.0},
    "ev_charger": {"Tech Park": 20.0, "Aurelia Tunnel": 0.0, "Water Plant": 0.0},
    "streetlight": {"Water Plant": 1.0, "Aurelia Tunnel": 6.0},
    "env_sensor": {"Water Plant": 10.0, "Aurelia Tunnel": 6.0},
    "gateway": {"Water Plant": 6.0, "Traffic Core": 10.0},
}

_INTEGRATORS = ("Tessellate Integration", "Lanternwick Services", "Gridhaven Systems")
_INSTALLERS = ("Quayside Field Installers", "Northlight Installations")
_DISTRIBUTORS = (("Meridale Supply", "Meridale"), ("Cobaltline Distribution", "Cobaltline"))
_MANUFACTURERS = (
    ("Vexlumen Lighting", "Vexlumen"),
    ("Quarrow Optics", "Quarrow"),
    ("Thistlebeck Sensing", "Thistlebeck"),
    ("Marlowe Binworks", "Marlowe"),
    ("Brindlecore Controls", "Brindlecore"),
    ("Kestrelnet Devices", "Kestrelnet"),
    ("Pellucid Charge", "Pellucid"),
    ("Orvanta ODM", "Orvanta"),  # an ODM: sells factory products under its own label
)
_CONSULTANT = "Arbor Civic Consulting"
_RESEARCHER = "Lattice Point Research"

_ZONE_DUTIES = [
    (CITY_NAME, "supply", "Meridale Supply"),
    (CITY_NAME, "credentials", "Tessellate Integration"),
    (CITY_NAME, "remote_access", "Tessellate Integration"),
    (CITY_NAME, "maintain", "Tessellate Integration"),
    ("Harbour", "maintain", "Gridhaven Systems"),
    ("Harbour", "install", "Quayside Field Installers"),
    ("Container Terminal", "maintain", "Tessellate Integration"),
    ("Old Town", "maintain", "Lanternwick Services"),
    ("Old Town", "install", "Northlight Installations"),
    ("Northgate", "maintain", "Lanternwick Services"),
    ("Northgate", "install", "Northlight Installations"),
    ("Riverside", "maintain", "Tessellate Integration"),
    ("Riverside", "install", "Quayside Field Installers"),
    ("Tech Park", "maintain", "Tessellate Integration"),
    ("Tech Park", "install", "Northlight Installations"),
    ("Tech Park", "supply", "Cobaltline Distribution"),
    ("Traffic Core", "maintain", "Gridhaven Systems"),
    ("Traffic Core", "install", "Gridhaven Systems"),
    ("Traffic Core", "remote_access", "Gridhaven Systems"),
    ("Water Plant", "maintain", "Gridhaven Systems"),
    ("Water Plant", "install", "Quayside Field Installers"),
    ("Water Plant", "credentials", "Gridhaven Systems"),
    ("Water Plant", "remote_access", "Gridhaven Systems"),
]

_KIND_TAGS = {
    "streetlight": ("led", "dimmable", "led-retrofit", "pole-mounted"),
    "env_sensor": ("air-quality", "noise", "pm2.5", "solar"),
    "waste_bin": ("fill-level", "underground", "solar"),
    "camera": ("anpr", "ptz", "cctv", "night-vision"),
    "parking_sensor": ("in-ground", "loading-bay", "disabled-bay"),
    "traffic_controller": ("signal-group", "priority-bus", "adaptive"),
    "gateway": ("lorawan", "lte-backhaul", "fibre"),
    "ev_charger": ("ac-22kw", "dc-fast", "ocpp"),
}
_COMMON_TAGS = ("pilot-2019", "eu-funded", "phase-2", "phase-3", "ppp-contract", "warranty")

# Per-row overrides of the zone-level duties (the `installer`/`maintainer`/`supplier` columns).
_INSTALLER_OVERRIDE = 0.45  # an installer named on the row (who actually installed it)
_MAINTAINER_OVERRIDE = 0.06  # a maintenance contract other than the zone's
_CAMERA_MAINTAINER = ("Gridhaven Systems", 0.65)  # the city's camera specialist, city-wide
_SUPPLIER_OF_OWN_BRAND = 0.9  # a distributor's own-label product names it as supplier
_SUPPLIER_OTHER = 0.3
_PPP_OWNER = ("Lanternwick Services", 0.05)  # street lights owned under an energy-service deal


def generate_city(devices: int = 2000, seed: int = 7, profile: Profile | None = None) -> DemoCity:
    """The curated city with `devices` devices; `seed` varies firmware minima and support ends.

    The kind mix, the products and their relabel chains come from `profile` (None: the bundled
    Port Aurelia profile, which gives the same city as before profiles existed).
    """
    prof = profile if profile is not None else load_profile()
    if devices < 0:
        raise ValueError("devices must be >= 0")
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
    zones = [(name, crit, parent) for name, crit, parent, _off, _w, _slug in _ZONES]
    orgs: list[tuple[str, str, str | None]] = [(n, "integrator", None) for n in _INTEGRATORS]
    orgs += [(n, "installer", None) for n in _INSTALLERS]
    orgs += [(n, "distributor", brand) for n, brand in _DISTRIBUTORS]
    orgs.append((_CONSULTANT, "consultant", None))
    orgs += [(n, "manufacturer", brand) for n, brand in _MANUFACTURERS]
    orgs.append((_RESEARCHER, "researcher", None))

    catalog: list[dict[str, str]] = []
    by_key: dict[tuple[str, str], dict[str, str]] = {}
    for product in prof.products:
        brand, model, kind, origin = product.brand, product.model, product.kind, product.origin
        scheme, eos_year = product.scheme, product.end_of_support
        releases = _releases(prof.root(brand, model), scheme)
        if origin is None:
            # Two to four releases are older than the minimum the maker supports.
            min_fw = releases[rng.randint(2, 4)]
        else:
            # A relabeler repeats its upstream's minimum, or demands a newer one.
            upstream = by_key[origin]["min_firmware"]
            k = releases.index(upstream)
            min_fw = releases[min(k + rng.choice((0, 0, 1)), len(releases) - 2)]
        if eos_year is not None:
            eos = date(eos_year, rng.choice((3, 6, 9, 12)), rng.choice((1, 15, 28)))
            if eos >= TODAY:
                eos = date(TODAY.year - 1, 12, 31)
            end_of_support = eos.isoformat()
        elif rng.random() < 0.6:
            end_of_support = date(TODAY.year + rng.randint(2, 8), 12, 31).isoformat()
        else:
            end_of_support = ""
        ob, om = origin if origin is not None else (brand, model)
        row = {"brand": brand, "model": model, "kind": kind, "origin_brand": ob,
               "origin_model": om, "end_of_support": end_of_support, "min_firmware": min_fw,
               "version_scheme": scheme,
               # The maker declares its upgrade's nominal duration (the profile's, unscaled); a
               # relabel inherits it. Slow devices take slow_factor times that.
               "upgrade_minutes": f"{prof.timing.upgrade_duration / 60:g}" if origin is None else "",
               "platform": ""}
        catalog.append(row)
        by_key[(brand, model)] = row
    return DemoCity(CITY_NAME, zones, orgs, list(_ZONE_DUTIES), catalog, devices, prof)


def product_releases(profile: Profile, brand: str, model: str) -> list[str]:
    """The firmware releases a product ships (its true manufacturer's), oldest first."""
    product = profile.product(brand, model)
    return _releases(profile.root(brand, model), product.scheme if product else "dotted")


HTTP_PORT = 8080
_BLOCK = 262_144  # loopback addresses per id-prefix block
_LOOPBACK_SPAN = 254 ** 3  # 127.x.y.z with x, y, z in 1..254


def loopback_address(ordinal: int, id_prefix: str = "") -> str:
    """The simulator address `127.x.y.z:8080` of the HTTP device at row `ordinal` (0-based).

    Never 127.0.0.1 and no .0/.255 octet. A non-empty id prefix (test isolation) moves the
    devices to another block of 262,144 addresses so that two simulators rarely collide.
    """
    n = ordinal + (1 + zlib.crc32(id_prefix.encode()) % 60) * _BLOCK if id_prefix else ordinal
    x, rest = divmod(n % _LOOPBACK_SPAN, 254 * 254)
    y, z = divmod(rest, 254)
    return f"127.{x + 1}.{y + 1}.{z + 1}:{HTTP_PORT}"


@functools.lru_cache(maxsize=1024)
def _releases(product: tuple[str, str], scheme: str) -> list[str]:
    """The firmware releases of a factory product, oldest first (relabels ship the same ones)."""
    rng = random.Random(f"releases/{product[0]}/{product[1]}/{scheme}")  # noqa: S311
    count = rng.randint(7, 10)
    out: list[str] = []
    major, minor, patch = rng.randint(1, 4), rng.randint(0, 3), 0
    build = rng.randint(150000, 190000)
    for _ in range(count):
        step = rng.random()
        if step < 0.15:
            major, minor, patch = major + 1, 0, 0
        elif step < 0.6:
            minor, patch = minor + 1, 0
        else:
            patch += rng.randint(1, 3)
        build += rng.randint(300, 9000)
        if scheme == "semver":
            out.append(f"{major}.{minor}.{patch}")
        elif scheme == "dotted":
            out.append(f"{major}.{minor}.{patch}.{rng.randint(1, 400)}")
        else:
            out.append(f"V{major}.{minor}.{patch} build {build}")
    return out


# --- device rows -----------------------------------------------------------------------------


def _cumulative(weights: Sequence[float]) -> list[float]:
    """Normalized cumulative weights whose last entry is exactly 1.0, for `bisect(cum, r)`."""
    cum = list(accumulate(weights))
    if not cum or cum[-1] <= 0:
        raise ValueError("nothing to choose from")
    out = [c / cum[-1] for c in cum]
    out[-1] = 1.0
    return out


@dataclass
class _ProductPlan:
    brand: str
    model: str
    releases: list[str]
    release_cum: list[float]  # newer releases are more common
    hardware: tuple[str, ...]
    serial_prefix: str
    serial_counter: list[int]  # shared by the products of one labeled brand
    mac_prefix: str  # a locally administered prefix per true maker
    mac_counter: list[int]  # shared by the products of one true maker
    first_day: int  # offset into the table of install dates
    days: int  # number of possible install days


@dataclass
class _KindPlan:
    kind: str
    id_prefix: str
    products: list[_ProductPlan]
    product_cum: list[float]
    zones: list[tuple[str, float, float, str]]  # name, km north, km east, address slug
    zone_cum: list[float]
    mqtt: float
    http: float  # cumulative: mqtt + http
    tags: tuple[str, ...]
    count: int = 0


def _chain_root(by_key: dict[tuple[str, str], dict[str, str]], key: tuple[str, str]
                ) -> tuple[str, str]:
    seen = {key}
    while (row := by_key.get(key)) is not None:
        up = (row["origin_brand"] or row["brand"], row["origin_model"] or row["model"])
        if up == key or up in seen or up not in by_key:
            break
        seen.add(up)
        key = up
    return key


def _plan(city: DemoCity, profile: Profile, first_ordinal: int) -> list[_KindPlan]:
    by_key = {(r["brand"], r["model"]): r for r in city.catalog}
    makers: dict[str, list[int]] = {}
    brands: dict[str, list[int]] = {}
    per_kind: dict[str, list[tuple[_ProductPlan, float]]] = {}
    for r in city.catalog:
        key = (r["brand"], r["model"])
        root = _chain_root(by_key, key)
        maker_no = list(makers).index(root[0]) if root[0] in makers else len(makers)
        mac_counter = makers.setdefault(root[0], [0])
        releases = _releases(root, r["version_scheme"] or "dotted")
        n = len(releases)
        eos = date.fromisoformat(r["end_of_support"]) if r["end_of_support"] else None
        last = max(min(eos, TODAY), date.fromordinal(first_ordinal)) if eos else TODAY
        first = max(date(last.year - (6 if eos else 5), 1, 1), date.fromordinal(first_ordinal))
        letters = "".join(c for c in r["brand"].upper() if c.isalpha())
        spec = profile.product(*key)
        plan = _ProductPlan(
            brand=r["brand"], model=r["model"], releases=releases,
            release_cum=_cumulative([0.7 ** (n - 1 - i) for i in range(n)]),
            hardware=spec.hardware if spec else ("1",), serial_prefix=(letters or "SN")[:3],
            serial_counter=brands.setdefault(r["brand"], [0]),
            mac_prefix=f"02:{maker_no & 0xFF:02x}:", mac_counter=mac_counter,
            first_day=first.toordinal() - first_ordinal,
            days=last.toordinal() - first.toordinal() + 1,
        )
        per_kind.setdefault(r["kind"] or "other", []).append((plan, spec.share if spec else 1.0))

    curated = {name: (off, w, slug) for name, _c, _p, off, w, slug in _ZONES}
    zones = []
    for name, _crit, _parent in city.zones:
        (north, east), weight, slug = curated.get(name, ((0.0, 0.0), 1.0, _slug(name)))
        zones.append((name, north, east, slug, weight))
    plans = []
    for kind, products in per_kind.items():
        special = _ZONE_KIND_WEIGHT.get(kind, {})
        placed = [(z[:4], special.get(z[0], z[4])) for z in zones]
        placed = [(z, w) for z, w in placed if w > 0] or [(z[:4], 1.0) for z in zones]
        spec_kind = profile.kind(kind)
        mqtt, http = (spec_kind.mqtt, spec_kind.http) if spec_kind else (0.5, 0.5)
        plans.append(_KindPlan(
            kind=kind, id_prefix=spec_kind.id_prefix if spec_kind else "DEV",
            products=[p for p, _w in products], product_cum=_cumulative([w for _p, w in products]),
            zones=[z for z, _w in placed], zone_cum=_cumulative([w for _z, w in placed]),
            mqtt=mqtt, http=mqtt + http, tags=_KIND_TAGS.get(kind, ()),
        ))
    return plans


def _slug(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum()) or "zone"


def _mac(plan: _ProductPlan) -> str:
    # A bijective scramble of the maker's counter, so consecutive devices do not get consecutive
    # addresses; unique per maker while the counter stays below 2**32.
    counter = plan.mac_counter[0]
    plan.mac_counter[0] = counter + 1
    block, low = divmod(counter, 1 << 24)
    v = f"{block & 0xFF:02x}{(low * 0x9E3779 + 0x5A17) & 0xFFFFFF:06x}"
    return f"{plan.mac_prefix}{v[0:2]}:{v[2:4]}:{v[4:6]}:{v[6:8]}"


def _serial(plan: _ProductPlan, year: str) -> str:
    # Unique per labeled brand: its counter, scrambled bijectively modulo 10**8.
    counter = plan.serial_counter[0]
    plan.serial_counter[0] = counter + 1
    high, low = divmod(counter, 100_000_000)
    return f"{plan.serial_prefix}{year}{high or ''}{(low * 48271 + 7_340_033) % 100_000_000:08d}"


def iter_device_rows(city: DemoCity, seed: int = 7, *, id_prefix: str = "") -> Iterator[dict[str, str]]:
    """`city.devices` inventory rows (COLUMNS, all strings, '' for empty), one at a time.

    HTTP devices' `address` is where the simulator serves them (`loopback_address`). `id_prefix`
    is prepended to every device id (and moves the HTTP addresses), so that several simulated
    cities can share one broker without their devices taking over each other's sessions.
    """
    profile = city.profile if city.profile is not None else load_profile()
    rng = random.Random(f"devices/{seed}")  # noqa: S311 - a simulation, not cryptography
    rand = rng.random
    first_ordinal = date(TODAY.year - 30, 1, 1).toordinal()
    kinds = _plan(city, profile, first_ordinal)
    mix = {k.kind: spec.weight if (spec := profile.kind(k.kind)) else 1.0 for k in kinds}
    kind_cum = _cumulative([mix[k.kind] for k in kinds])
    days = [date.fromordinal(o).isoformat()
            for o in range(first_ordinal, TODAY.toordinal() + 1)]
    org_names = {name for name, _kind, _brand in city.orgs}
    installers = [n for n in (*_INSTALLERS, *_INTEGRATORS) if n in org_names]
    integrators = [n for n in _INTEGRATORS if n in org_names]
    distributors = [n for n, kind, _b in city.orgs if kind == "distributor"]
    own_label = {brand: n for n, kind, brand in city.orgs if kind == "distributor" and brand}
    camera_maintainer = _CAMERA_MAINTAINER[0] if _CAMERA_MAINTAINER[0] in org_names else ""
    ppp_owner = _PPP_OWNER[0] if _PPP_OWNER[0] in org_names else ""
    n_installers, n_integrators = len(installers), len(integrators)
    n_distributors = len(distributors)
    km_lat = 1 / 111.32
    km_lon = 1 / (111.32 * 0.7236)  # cos(43.65 degrees)
    lat0, lon0 = CENTRE
    width = max(6, len(str(city.devices)))
    n_common = len(_COMMON_TAGS)
    for i in range(city.devices):
        k = kinds[bisect(kind_cum, rand())]
        kind = k.kind
        plan = k.products[bisect(k.product_cum, rand())]
        zone, north, east, slug = k.zones[bisect(k.zone_cum, rand())]
        k.count += 1
        device_id = f"{id_prefix}{k.id_prefix}-{k.count:0{width}d}"
        installed = days[plan.first_day + int(rand() * plan.days)]
        releases = plan.releases
        firmware = releases[bisect(plan.release_cum, rand())]
        hardware = plan.hardware[int(rand() * len(plan.hardware))]

        r = rand()
        protocol = "mqtt" if r < k.mqtt else "http" if r < k.http else ""
        r = rand()
        host = i + 4096
        if protocol == "http":
            address = loopback_address(i, id_prefix)
        elif r < 0.02:
            address = ""
        elif r < 0.12:
            address = f"{device_id.lower()}.{slug}.aurelia.lan"
        else:
            address = f"10.{(host >> 16) & 0xFF}.{(host >> 8) & 0xFF}.{host & 0xFF}"
        if rand() < 0.03:
            latitude = longitude = ""
        else:  # a triangular spread of about 1 km around the zone's centre
            latitude = f"{lat0 + (north + rand() + rand() - 1.0) * km_lat:.6f}"
            longitude = f"{lon0 + (east + rand() + rand() - 1.0) * km_lon:.6f}"

        owner = ppp_owner if kind == "streetlight" and rand() < _PPP_OWNER[1] else ""
        installer = (installers[int(rand() * n_installers)]
                     if n_installers and rand() < _INSTALLER_OVERRIDE else "")
        if kind == "camera" and camera_maintainer and rand() < _CAMERA_MAINTAINER[1]:
            maintainer = camera_maintainer
        elif n_integrators and rand() < _MAINTAINER_OVERRIDE:
            maintainer = integrators[int(rand() * n_integrators)]
        else:
            maintainer = ""
        own = own_label.get(plan.brand)
        if own is not None:
            supplier = own if rand() < _SUPPLIER_OF_OWN_BRAND else ""
        elif n_distributors and rand() < _SUPPLIER_OTHER:
            supplier = distributors[int(rand() * n_distributors)]
        else:
            supplier = ""

        r = rand()
        tag = k.tags[int(r / 0.7 * len(k.tags))] if k.tags and r < 0.7 else ""
        r = rand()
        if r < 0.25:
            common = _COMMON_TAGS[int(r / 0.25 * n_common)]
            tags = f"{tag};{common}" if tag else common
        else:
            tags = tag
        yield {
            "id": device_id,
            "kind": kind,
            "brand": plan.brand,
            "model": plan.model,
            "firmware_version": firmware,
            "zone": zone,
            "serial": _serial(plan, installed[2:4]),
            "mac": _mac(plan),
            "hardware_version": hardware,
            "address": address,
            "protocol": protocol,
            "latitude": latitude,
            "longitude": longitude,
            "owner": owner,
            "installer": installer,
            "maintainer": maintainer,
            "supplier": supplier,
            "installed_at": installed,
            "tags": tags,
        }


def write_inventory_csv(city: DemoCity, path: Path, seed: int = 7, *, id_prefix: str = "") -> int:
    """Stream the inventory to a CSV file (UTF-8, header row); returns the number of rows."""
    counted = [0]
    cells = itemgetter(*COLUMNS)

    def lines() -> Iterator[tuple[str, ...]]:
        for row in iter_device_rows(city, seed, id_prefix=id_prefix):
            counted[0] += 1
            yield cells(row)

    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(lines())
    return counted[0]


def write_catalog_csv(city: DemoCity, path: Path) -> int:
    """Write the product catalog file (origins before relabels); returns the number of rows."""
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CATALOG_COLUMNS)
        for row in city.catalog:
            writer.writerow([row.get(c, "") for c in CATALOG_COLUMNS])
    return len(city.catalog)


def write_orgs_csv(city: DemoCity, path: Path) -> int:
    """Write the partner organizations the inventory names, with their kinds (`cityward orgs import`:
    an inventory import never creates an organization); returns the number of rows."""
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["name", "kind", "brand"])
        for name, kind, brand in city.orgs:
            writer.writerow([name, kind, brand or ""])
    return len(city.orgs)


__all__ = ["COLUMNS", "HTTP_PORT", "DemoCity", "generate_city", "iter_device_rows", "loopback_address",
           "product_releases", "write_catalog_csv", "write_inventory_csv", "write_orgs_csv"]
