"""Shared responsibility: who sees and changes which devices, enforced in the services."""

from __future__ import annotations

import pytest

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller, Role
from cityward.errors import InvalidInput, NotFound, PermissionDenied
from cityward.services import catalog, inventory, organizations, zones
from cityward.services.inventory import DeviceFilter
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv, state

HEADER = ["id", "kind", "brand", "model", "firmware_version", "zone", "maintainer", "supplier"]


@pytest.fixture
def shared_city(platform: Platform, city: Caller) -> Caller:
    """North (maintained by Alpha through the zone), South (Beta), one override, one supplier."""
    uow = platform.uow
    zones.create_zone(uow, city, "north", "high")
    zones.create_zone(uow, city, "north-tunnel", "critical", parent="north")
    zones.create_zone(uow, city, "south")
    for name, kind in (("Alpha", "integrator"), ("Beta", "integrator"), ("Dist", "distributor"),
                       ("Consult", "consultant"), ("Nova", "researcher")):
        organizations.create_org(uow, city, name, kind)
    organizations.create_org(uow, city, "Factory Corp", "manufacturer", brand="Factorix")
    zones.assign_duty(uow, city, "north", "maintain", "Alpha")
    zones.assign_duty(uow, city, "south", "maintain", "Beta")
    catalog.save_product(uow, city, {"brand": "Factorix", "model": "F1", "origin_brand": "Factorix",
                                     "origin_model": "F1"})
    catalog.save_product(uow, city, {"brand": "CityGlow", "model": "CG1", "origin_brand": "Factorix",
                                     "origin_model": "F1"})
    rows = [
        {**device(1), "zone": "north"},
        {**device(2), "zone": "north-tunnel"},  # inherits Alpha from north
        {**device(3), "zone": "south"},
        {**device(4), "zone": "south", "maintainer": "Alpha"},  # override
        {**device(5), "zone": "south", "brand": "CityGlow", "model": "CG1", "supplier": "Dist"},
        {**device(6), "zone": "north", "brand": "Factorix", "model": "F1"},
    ]
    import_csv(platform, city, csv_bytes(rows, HEADER))
    return city


def _ids(platform: Platform, caller: Caller, flt: DeviceFilter = DeviceFilter()) -> list[str]:
    return [d.id for d in inventory.list_devices(platform.uow, caller, flt).items]


def test_integrators_see_only_their_devices(platform: Platform, shared_city: Caller) -> None:
    alpha = caller_for(platform, "Alpha")
    beta = caller_for(platform, "Beta")
    assert _ids(platform, alpha) == ["SL-00001", "SL-00002", "SL-00004", "SL-00006"]
    assert _ids(platform, beta) == ["SL-00003", "SL-00005"]
    with pytest.raises(NotFound):
        inventory.get_device(platform.uow, beta, "SL-00001")
    assert inventory.get_device(platform.uow, beta, "SL-00003").responsible["maintain"] == "Beta"
    assert _ids(platform, shared_city, DeviceFilter(org="Alpha")) == _ids(platform, alpha)


def test_integrator_cannot_change_another_integrators_device(platform: Platform, shared_city: Caller) -> None:
    beta = caller_for(platform, "Beta")
    before = state(platform)
    data = csv_bytes([{**device(1), "zone": "north", "maintainer": "Beta", "firmware_version": "6.6"}], HEADER)
    with pytest.raises(InvalidInput) as info:
        import_csv(platform, beta, data)
    assert {(p.row, p.field) for p in info.value.problems} == {(2, "id")}
    assert state(platform) == before
    assert inventory.get_device(platform.uow, shared_city, "SL-00001").firmware_version == "1.2.3"


def test_integrator_imports_must_name_itself(platform: Platform, shared_city: Caller) -> None:
    beta = caller_for(platform, "Beta")
    with pytest.raises(InvalidInput) as info:
        import_csv(platform, beta, csv_bytes([{**device(9), "zone": "south"}], HEADER))
    assert "naming it ('Beta') as installer or maintainer" in info.value.problems[0].message
    report = import_csv(platform, beta, csv_bytes([{**device(9), "zone": "south", "maintainer": "Beta"},
                                                   {**device(3), "zone": "south", "maintainer": "Beta",
                                                    "firmware_version": "2.0"}], HEADER))
    assert (report.created, report.updated) == (1, 1)


def test_viewer_consultant_researcher_cannot_write(platform: Platform, shared_city: Caller) -> None:
    data = csv_bytes([{**device(9), "zone": "south", "maintainer": "Beta"}], HEADER)
    for caller in (caller_for(platform, "Beta", Role.VIEWER), caller_for(platform, "Consult", Role.ADMIN),
                   caller_for(platform, "Nova", Role.ADMIN), caller_for(platform, "Factory Corp")):
        with pytest.raises(PermissionDenied):
            import_csv(platform, caller, data)


def test_consultant_reads_everything(platform: Platform, shared_city: Caller) -> None:
    assert len(_ids(platform, caller_for(platform, "Consult", Role.VIEWER))) == 6


def test_distributor_sees_what_it_supplied(platform: Platform, shared_city: Caller) -> None:
    assert _ids(platform, caller_for(platform, "Dist")) == ["SL-00005"]


def test_researcher_sees_no_devices(platform: Platform, shared_city: Caller) -> None:
    with pytest.raises(PermissionDenied):
        _ids(platform, caller_for(platform, "Nova"))


def test_manufacturer_sees_counts_of_its_products_through_relabels(platform: Platform, shared_city: Caller) -> None:
    maker = caller_for(platform, "Factory Corp", Role.VIEWER)
    with pytest.raises(PermissionDenied):
        _ids(platform, maker)
    rows = inventory.summarize_devices(platform.uow, maker)
    assert {(r.brand, r.model, r.devices) for r in rows} == {("CityGlow", "CG1", 1), ("Factorix", "F1", 1)}
    assert all(r.manufacturer == "Factorix" for r in rows)


def test_true_manufacturer_filter_follows_relabel_chain(platform: Platform, shared_city: Caller) -> None:
    catalog.save_product(platform.uow, shared_city, {"brand": "Resell", "model": "R9", "origin_brand": "CityGlow",
                                                     "origin_model": "CG1"})
    p = catalog.get_product(platform.uow, shared_city, ("resell", "r9"))
    assert p.chain == ["Resell R9", "CityGlow CG1", "Factorix F1"] and p.manufacturer == "Factorix"
    assert _ids(platform, shared_city, DeviceFilter(manufacturer="factorix")) == ["SL-00005", "SL-00006"]


def test_relabel_loop_is_refused(platform: Platform, shared_city: Caller) -> None:
    with pytest.raises(InvalidInput, match="loops"):
        catalog.save_product(platform.uow, shared_city, {"brand": "Factorix", "model": "F1",
                                                         "origin_brand": "CityGlow", "origin_model": "CG1"})
    assert catalog.get_product(platform.uow, shared_city, ("Factorix", "F1")).origin_status == "original"


def test_only_city_admin_manages_zones_and_orgs(platform: Platform, shared_city: Caller) -> None:
    alpha = caller_for(platform, "Alpha", Role.ADMIN)
    with pytest.raises(PermissionDenied):
        zones.create_zone(platform.uow, alpha, "mine")
    with pytest.raises(PermissionDenied):
        organizations.create_org(platform.uow, alpha, "X", "integrator")
    assert {o.name for o in organizations.list_orgs(platform.uow, alpha)} == {"Alpha", "Springfield"}


def test_device_level_duty_override(platform: Platform, shared_city: Caller) -> None:
    inventory.assign_device_duty(platform.uow, shared_city, "SL-00003", "credentials", "Alpha")
    alpha = caller_for(platform, "Alpha")
    assert "SL-00003" in _ids(platform, alpha)
    assert inventory.get_device(platform.uow, alpha, "SL-00003").responsible["credentials"] == "Alpha"
    with pytest.raises(PermissionDenied):
        inventory.assign_device_duty(platform.uow, caller_for(platform, "Beta", Role.ADMIN),
                                     "SL-00003", "maintain", "Beta")
    inventory.assign_device_duty(platform.uow, shared_city, "SL-00003", "credentials", None)
    assert "SL-00003" not in _ids(platform, alpha)
    with pytest.raises(InvalidInput):
        inventory.assign_device_duty(platform.uow, shared_city, "SL-00003", "coffee", "Alpha")
