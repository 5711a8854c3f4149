"""The deterministic demo city (cityward.sim.city): its structure, its rows, and a real import."""

from __future__ import annotations

import ast
import csv
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from cityward.adapters.inventory_files import FileFormat
from cityward.bootstrap import Platform
from cityward.domain import inventory as inventory_format
from cityward.domain.catalog import CATALOG_COLUMNS, CatalogRecord, parse_catalog_row
from cityward.domain.devices import DeviceKind
from cityward.domain.inventory import DeviceRecord, parse_row
from cityward.domain.organizations import Caller, OrgKind
from cityward.domain.responsibility import Duty
from cityward.domain.zones import Criticality
from cityward.entrypoints.cli.demo import install_city
from cityward.services import inventory
from cityward.services.inventory import DeviceFilter
from cityward.sim import city as sim
from cityward.sim.city import DemoCity, generate_city, iter_device_rows

ROWS = 6000  # enough rows that every kind, product and override shows up


@pytest.fixture(scope="module")
def demo() -> DemoCity:
    return generate_city(ROWS, seed=7)


@pytest.fixture(scope="module")
def rows(demo: DemoCity) -> list[dict[str, str]]:
    return list(iter_device_rows(demo, seed=7))


def _products(demo: DemoCity) -> dict[tuple[str, str], dict[str, str]]:
    return {(p["brand"], p["model"]): p for p in demo.catalog}


def _chain(demo: DemoCity, brand: str, model: str) -> list[tuple[str, str]]:
    """Labeled product → ... → true origin, following the catalog rows."""
    products = _products(demo)
    chain = [(brand, model)]
    while True:
        p = products[chain[-1]]
        up = (p["origin_brand"], p["origin_model"])
        if up == chain[-1]:
            return chain
        assert up not in chain, f"relabel cycle: {[*chain, up]}"
        chain.append(up)


def _version(text: str) -> tuple[int, ...]:
    digits = text.lstrip("V").split(" ")[0]
    return tuple(int(x) for x in digits.split("."))


# --- the module stays device-side ------------------------------------------------------------


def test_imports_nothing_from_cityward_outside_sim() -> None:
    tree = ast.parse(Path(sim.__file__).read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        for name in names:
            assert not name.startswith("cityward") or name.startswith("cityward.sim"), name


def test_columns_match_the_inventory_format() -> None:
    assert sim.COLUMNS == inventory_format.COLUMNS
    assert sim.CATALOG_COLUMNS == CATALOG_COLUMNS


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_city_and_rows() -> None:
    assert generate_city(300, seed=11) == generate_city(300, seed=11)
    first = list(iter_device_rows(generate_city(300, seed=11), seed=11))
    again = list(iter_device_rows(generate_city(300, seed=11), seed=11))
    assert first == again and len(first) == 300


def test_other_seed_other_rows() -> None:
    a = list(iter_device_rows(generate_city(200, seed=1), seed=1))
    b = list(iter_device_rows(generate_city(200, seed=2), seed=2))
    assert a != b


def test_a_prefix_of_a_bigger_city_is_the_smaller_city() -> None:
    big = iter_device_rows(generate_city(1000, seed=5), seed=5)
    small = list(iter_device_rows(generate_city(100, seed=5), seed=5))
    assert list(islice(big, 100)) == small


def test_rows_stream() -> None:
    it = iter_device_rows(generate_city(10_000_000))
    assert iter(it) is it  # a generator: no list of all rows is built
    assert len(list(islice(it, 5))) == 5


# --- the city's structure --------------------------------------------------------------------


def test_zone_tree(demo: DemoCity) -> None:
    assert 8 <= len(demo.zones) <= 12
    seen: set[str] = set()
    for name, crit, parent in demo.zones:
        assert name not in seen
        assert Criticality(crit)
        assert parent is None or parent in seen, f"{name}: parent {parent} listed after it"
        seen.add(name)
    roots = [z for z in demo.zones if z[2] is None]
    assert len(roots) == 1
    assert sum(1 for z in demo.zones if z[1] == "critical") >= 2
    depth = {name: 0 for name, _c, _p in roots}
    for name, _c, parent in demo.zones:
        if parent is not None:
            depth[name] = depth[parent] + 1
    assert max(depth.values()) >= 2  # city → district → place


def test_organizations(demo: DemoCity) -> None:
    names = [o[0] for o in demo.orgs]
    assert len(names) == len(set(names))
    kinds = Counter(kind for _n, kind, _b in demo.orgs)
    assert "city" not in kinds
    assert all(OrgKind(k) for k in kinds)
    assert 3 <= kinds["integrator"] + kinds["installer"] <= 5
    assert 1 <= kinds["distributor"] <= 2
    assert kinds["consultant"] == 1 and kinds["researcher"] == 1
    assert kinds["manufacturer"] >= 4
    assert all(brand for _n, kind, brand in demo.orgs if kind == "manufacturer")


def test_zone_duties(demo: DemoCity) -> None:
    zone_names = {z[0] for z in demo.zones}
    orgs = {name: kind for name, kind, _b in demo.orgs}
    for zone, duty, org in demo.zone_duties:
        assert zone in zone_names and org in orgs and Duty(duty)
    assert len({(z, d) for z, d, _o in demo.zone_duties}) == len(demo.zone_duties)
    root = next(z[0] for z in demo.zones if z[2] is None)
    districts = [z[0] for z in demo.zones if z[2] == root]
    maintainers = {z: o for z, d, o in demo.zone_duties if d == "maintain"}
    for district in districts:
        assert orgs[maintainers[district]] == "integrator", district


def test_catalog_and_relabel_chains(demo: DemoCity) -> None:
    products = _products(demo)
    assert len(products) == len(demo.catalog)
    seen: set[tuple[str, str]] = set()
    longest = 0
    for p in demo.catalog:
        assert set(p) == set(CATALOG_COLUMNS)
        assert isinstance(parse_catalog_row(p, 1), CatalogRecord)
        up = (p["origin_brand"], p["origin_model"])
        assert up == (p["brand"], p["model"]) or up in seen, f"{p}: origin listed after it"
        seen.add((p["brand"], p["model"]))
        chain = _chain(demo, p["brand"], p["model"])
        assert len(chain) <= 3
        longest = max(longest, len(chain))
        assert products[chain[-1]]["kind"] == p["kind"]
    assert longest == 3  # a distributor's label on an ODM's label on the factory's product
    assert sum(1 for p in demo.catalog if p["origin_brand"] == p["brand"]) >= 5
    assert sum(1 for p in demo.catalog if p["origin_brand"] != p["brand"]) >= 5
    makers = {brand for _n, kind, brand in demo.orgs if kind == "manufacturer"}
    assert {_chain(demo, p["brand"], p["model"])[-1][0] for p in demo.catalog} <= makers
    past = [p for p in demo.catalog if p["end_of_support"] and p["end_of_support"] < "2025-06-30"]
    assert len(past) >= 2


def test_names_are_fictional(demo: DemoCity) -> None:
    real = {"philips", "signify", "hikvision", "dahua", "axis", "bosch", "siemens", "cisco",
            "schneider", "honeywell", "huawei", "samsung", "itron", "telensa", "ericsson"}
    text = repr(demo).lower()
    assert not [name for name in real if name in text]


# --- the rows --------------------------------------------------------------------------------


def test_rows_are_valid_inventory_rows(rows: list[dict[str, str]]) -> None:
    for n, row in enumerate(rows, start=2):
        assert tuple(row) == sim.COLUMNS
        assert all(isinstance(v, str) for v in row.values())
        parsed = parse_row(row, n)
        assert isinstance(parsed, DeviceRecord), parsed


def test_unique_ids_macs_and_serials_per_brand(rows: list[dict[str, str]]) -> None:
    assert len({r["id"] for r in rows}) == len(rows)
    macs = [r["mac"] for r in rows if r["mac"]]
    assert len(set(macs)) == len(macs) == len(rows)
    serials = [(r["brand"], r["serial"]) for r in rows if r["serial"]]
    assert len(set(serials)) == len(serials) == len(rows)


def test_rows_name_what_the_city_has(demo: DemoCity, rows: list[dict[str, str]]) -> None:
    zone_names = {z[0] for z in demo.zones}
    org_names = {o[0] for o in demo.orgs}
    products = _products(demo)
    for r in rows:
        assert r["zone"] in zone_names
        assert (r["brand"], r["model"]) in products
        assert products[(r["brand"], r["model"])]["kind"] == r["kind"]
        for column in ("owner", "installer", "maintainer", "supplier"):
            assert not r[column] or r[column] in org_names, (column, r[column])


def test_realistic_mix(demo: DemoCity, rows: list[dict[str, str]]) -> None:
    kinds = Counter(r["kind"] for r in rows)
    assert len(kinds) >= 6 and all(DeviceKind(k) for k in kinds)
    order = [k for k, _n in kinds.most_common()]
    assert order[0] == "streetlight"
    assert kinds["env_sensor"] > kinds["waste_bin"] > kinds["camera"] > kinds["gateway"]
    assert kinds["camera"] > kinds["traffic_controller"]
    relabeled = sum(1 for r in rows if len(_chain(demo, r["brand"], r["model"])) > 1)
    assert 0.20 <= relabeled / len(rows) <= 0.60
    assert {r["protocol"] for r in rows} >= {"mqtt", "http"}
    for column, low, high in (("installer", 0.2, 0.7), ("maintainer", 0.02, 0.3),
                              ("supplier", 0.1, 0.6), ("owner", 0.0, 0.1)):
        share = sum(1 for r in rows if r[column]) / len(rows)
        assert low < share < high, (column, share)
    assert sum(1 for r in rows if r["tags"]) > len(rows) / 2
    assert any(r["address"].endswith(".lan") for r in rows)
    assert any(r["address"].startswith("10.") for r in rows)
    assert len({r["zone"] for r in rows}) >= len(demo.zones) - 1


def test_firmware_spread_around_the_minimum(demo: DemoCity, rows: list[dict[str, str]]) -> None:
    products = _products(demo)
    below = 0
    for r in rows:
        minimum = products[(r["brand"], r["model"])]["min_firmware"]
        below += _version(r["firmware_version"]) < _version(minimum)
    assert 0.03 < below / len(rows) < 0.4
    per_product = Counter((r["brand"], r["model"], r["firmware_version"]) for r in rows)
    assert len(per_product) > 3 * len(products)


def test_csv_writers(demo: DemoCity, tmp_path: Path) -> None:
    small = generate_city(50)
    assert sim.write_inventory_csv(small, tmp_path / "d.csv") == 50
    with (tmp_path / "d.csv").open(newline="") as f:
        read = list(csv.DictReader(f))
    assert read == list(iter_device_rows(small))
    assert sim.write_catalog_csv(demo, tmp_path / "c.csv") == len(demo.catalog)
    with (tmp_path / "c.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == demo.catalog


# --- through the real services ---------------------------------------------------------------


def test_import_a_300_device_city(platform: Platform, city: Caller, tmp_path: Path) -> None:
    demo = generate_city(300, seed=3)
    assert install_city(platform, city, demo) == len(demo.catalog)
    path = tmp_path / "devices.csv"
    assert sim.write_inventory_csv(demo, path, seed=3) == 300
    with path.open("rb") as f:
        report = inventory.import_devices(platform.uow, city, f, "devices.csv", FileFormat.CSV)
    assert (report.created, report.updated, report.rejected_rows) == (300, 0, 0)
    assert report.created_products == []  # everything was in the catalog
    assert inventory.list_devices(platform.uow, city).total == 300

    rows = list(iter_device_rows(demo, seed=3))
    origin = Counter(_chain(demo, r["brand"], r["model"])[-1][0] for r in rows)
    relabeled = Counter((r["brand"], _chain(demo, r["brand"], r["model"])[-1][0]) for r in rows
                        if len(_chain(demo, r["brand"], r["model"])) > 1)
    assert relabeled
    for maker, count in origin.items():
        found = inventory.list_devices(platform.uow, city, DeviceFilter(manufacturer=maker),
                                       limit=1000)
        assert found.total == count, maker
        assert all(d.manufacturer == maker for d in found.items)
    for (brand, maker), count in relabeled.items():
        found = inventory.list_devices(platform.uow, city,
                                       DeviceFilter(manufacturer=maker, brand=brand), limit=1000)
        assert found.total == count, (brand, maker)
        assert all(d.brand == brand and d.manufacturer == maker and d.origin_status == "relabeled"
                   for d in found.items)
    # The three-level chain: a distributor's label on an ODM's label on the factory's camera.
    cam = next(d for d in inventory.list_devices(
        platform.uow, city, DeviceFilter(brand="Cobaltline", kind="camera")).items)
    assert cam.manufacturer == "Quarrow" and cam.origin_model == "QC-410"

    # Zone duties and per-row overrides resolve to the organizations the sheet named.
    row = next(r for r in rows if r["maintainer"])
    assert inventory.get_device(platform.uow, city, row["id"]).responsible["maintain"] == \
        row["maintainer"]

    with path.open("rb") as f:
        again = inventory.import_devices(platform.uow, city, f, "devices.csv", FileFormat.CSV)
    assert again.created == 0 and again.imported == 300 and again.rejected_rows == 0
    assert inventory.list_devices(platform.uow, city).total == 300
