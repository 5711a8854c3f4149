"""Names have one identity (zones, organizations, products), kinds are never guessed, and
`cityward doctor` reports what earlier versions left behind."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cityward.adapters.storage.models import AuditEventRow, OrganizationRow, ZoneRow
from cityward.bootstrap import Platform
from cityward.domain.names import NameTaken, clash_key, is_clash_key, name_key
from cityward.domain.organizations import Caller
from cityward.errors import Conflict, InvalidInput, NotFound
from cityward.services import catalog, doctor, inventory, organizations, zones
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv

# --- the rule ---------------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_a_key_is_its_own_key(name: str) -> None:
    assert name_key(name_key(name)) == name_key(name)


@given(st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "Zs", "P"]), max_size=40))
def test_case_and_spacing_do_not_matter(name: str) -> None:
    key = name_key(name)
    assert name_key(name.upper()) == key == name_key(name.lower()) == name_key(f"  {name}\t")
    assert name_key(" ".join(name.split())) == key


@given(st.text(max_size=40))
def test_compatibility_forms_are_the_same_name(name: str) -> None:
    assert name_key(unicodedata.normalize("NFKC", name)) == name_key(name)
    assert name_key(unicodedata.normalize("NFKD", name)) == name_key(name)


def test_examples() -> None:
    assert name_key("Harbour") == name_key("HARBOUR") == name_key("\uff28\uff41\uff52\uff42\uff4f\uff55\uff52")
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("Pier  9 ") == "pier 9"
    assert name_key("Harbour") != name_key("Harbor")
    assert is_clash_key(clash_key("harbour", 7)) and not is_clash_key("harbour")


# --- zones and organizations ------------------------------------------------------------------


def test_a_near_duplicate_zone_is_refused_naming_the_existing_one(platform: Platform, city: Caller) -> None:
    zones.create_zone(platform.uow, city, "Harbour", "high")
    for near in ("harbour", "HARBOUR ", "\uff28arbour"):
        with pytest.raises(NameTaken, match="'Harbour'"):
            zones.create_zone(platform.uow, city, near)
    assert [z.name for z in zones.list_zones(platform.uow, city)] == ["Harbour"]


def test_a_near_duplicate_organization_is_refused(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Tideway Integrators", "integrator")
    with pytest.raises(NameTaken, match="'Tideway Integrators'"):
        organizations.create_org(platform.uow, city, "tideway  integrators", "installer")
    with pytest.raises(NameTaken, match="'Springfield'"):
        organizations.create_org(platform.uow, city, "SPRINGFIELD", "consultant")


def test_the_city_is_made_once_by_init(platform: Platform, city: Caller) -> None:
    with pytest.raises(InvalidInput, match="cityward init"):
        organizations.create_org(platform.uow, city, "Second City", "city")
    organizations.create_org(platform.uow, city, "Partner", "integrator")
    with pytest.raises(InvalidInput, match="cityward init"):
        organizations.set_org_kind(platform.uow, city, "Partner", "City")
    with pytest.raises(Conflict, match="its kind stays city"):
        organizations.set_org_kind(platform.uow, city, "springfield", "integrator")


def test_lookups_accept_any_case(platform: Platform, city: Caller) -> None:
    zones.create_zone(platform.uow, city, "Harbour", "high")
    organizations.create_org(platform.uow, city, "Tideway Integrators", "integrator")
    zones.assign_duty(platform.uow, city, "HARBOUR", "maintain", "tideway integrators")
    assert zones.get_zone(platform.uow, city, "harbour").responsibilities == {"maintain": "Tideway Integrators"}
    assert organizations.get_org(platform.uow, city, "TIDEWAY INTEGRATORS").kind == "integrator"
    zones.create_zone(platform.uow, city, "Pier", parent="harbour")
    assert zones.get_zone(platform.uow, city, "pier").parent == "Harbour"
    import_csv(platform, city, csv_bytes([device(1, zone="harbour")]))
    inventory.assign_device_duty(platform.uow, city, "SL-00001", "credentials", "TIDEWAY integrators")
    # The story: the duty lands on the zone that holds the devices, and the integrator sees them.
    tideway = caller_for(platform, "Tideway Integrators")
    assert inventory.list_devices(platform.uow, tideway).total == 1
    assert inventory.list_devices(platform.uow, city, inventory.DeviceFilter(zone="HARBOUR")).total == 1
    with pytest.raises(NotFound, match="does not exist"):
        inventory.list_devices(platform.uow, city, inventory.DeviceFilter(zone="Harbor"))


def test_products_compare_by_the_same_rule(platform: Platform, city: Caller) -> None:
    catalog.save_product(platform.uow, city, {"brand": "Lumo", "model": "L100", "kind": "streetlight"})
    catalog.save_product(platform.uow, city, {"brand": "\uff2cumo", "model": "l100", "end_of_support": "2030-01-01"})
    [product] = catalog.list_products(platform.uow, city)
    assert (product.brand, product.model, str(product.end_of_support)) == ("Lumo", "L100", "2030-01-01")
    report = import_csv(platform, city, csv_bytes([device(1, zone="downtown", brand="LUMO", model="\uff2c100")]),
                        create_missing=True)
    assert report.created_products == []


def test_renaming_keeps_names_unique_and_is_audited(platform: Platform, city: Caller) -> None:
    zones.create_zone(platform.uow, city, "Harbour")
    zones.create_zone(platform.uow, city, "Old Port")
    with pytest.raises(NameTaken, match="'Harbour'"):
        zones.rename_zone(platform.uow, city, "old port", "HARBOUR")
    assert zones.rename_zone(platform.uow, city, "old port", "Marina").name == "Marina"
    assert zones.rename_zone(platform.uow, city, "harbour", "harbour").name == "harbour"  # its own case
    organizations.create_org(platform.uow, city, "Acme", "installer")
    with pytest.raises(NameTaken):
        organizations.rename_org(platform.uow, city, "acme", "Springfield")
    assert organizations.rename_org(platform.uow, city, "ACME", "Acme Installers").name == "Acme Installers"
    with platform.uow() as uow:
        actions = list(uow.session.scalars(select(AuditEventRow.action).where(
            AuditEventRow.action.in_(["zones.renamed", "orgs.renamed"])).order_by(AuditEventRow.seq)))
    assert actions == ["zones.renamed", "zones.renamed", "orgs.renamed"]


# --- what earlier versions left: cityward doctor ---------------------------------------------


def _as_an_earlier_import_did(platform: Platform, city: Caller, name: str, kind: str) -> None:
    """What `devices import --create-missing` of earlier versions wrote for a new organization."""
    from datetime import UTC, datetime

    with platform.uow(write=True) as uow:
        uow.session.add(OrganizationRow(name=name, name_key=name_key(name), kind=kind,
                                        created_at=datetime.now(UTC)))
        uow.record(city, "orgs.created", "organization", name, after={"name": name, "kind": kind})
        uow.commit()


def test_doctor_reports_kinds_an_earlier_import_guessed_until_stated(platform: Platform, city: Caller) -> None:
    assert doctor.diagnose(platform.uow, city) == []
    organizations.create_org(platform.uow, city, "Stated Co", "integrator")
    _as_an_earlier_import_did(platform, city, "Harbour Partners", "city")
    _as_an_earlier_import_did(platform, city, "Quay Maintenance", "installer")
    found = doctor.diagnose(platform.uow, city)
    assert [(f.check, f.subject) for f in found] == [
        ("extra_city", "organization 'Harbour Partners'"), ("guessed_kind", "organization 'Quay Maintenance'")]
    assert "cityward orgs set-kind 'Harbour Partners' KIND" in found[0].fix
    organizations.set_org_kind(platform.uow, city, "harbour partners", "integrator")
    organizations.set_org_kind(platform.uow, city, "Quay Maintenance", "installer")  # confirmed as it was
    assert doctor.diagnose(platform.uow, city) == []
    partners = caller_for(platform, "Harbour Partners")
    assert not partners.is_city


def test_doctor_reports_name_clashes_until_renamed(platform: Platform, city: Caller) -> None:
    zones.create_zone(platform.uow, city, "Harbour")
    with platform.uow(write=True) as uow:  # what migration 0009 keeps of a clash earlier versions allowed
        older = uow.session.scalars(select(ZoneRow).where(ZoneRow.name == "Harbour")).one()
        from datetime import UTC, datetime
        clashing = ZoneRow(name="harbour", name_key="pending", criticality="medium", created_at=datetime.now(UTC))
        uow.session.add(clashing)
        uow.session.flush()
        clashing.name_key = clash_key(older.name_key, clashing.id)
        uow.commit()
    [finding] = doctor.diagnose(platform.uow, city)
    assert finding.check == "name_clash" and finding.subject == "zone 'harbour'"
    assert "'Harbour'" in finding.problem and "cityward zones rename harbour" in finding.fix
    assert zones.get_zone(platform.uow, city, "harbour").name == "Harbour"  # lookups reach the key holder
    zones.rename_zone(platform.uow, city, "harbour", "Harbour (empty)")
    assert doctor.diagnose(platform.uow, city) == []


def test_only_the_city_admin_runs_the_doctor(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    with pytest.raises(Exception, match="city"):
        doctor.diagnose(platform.uow, caller_for(platform, "Alpha"))


def test_organizations_come_from_a_file_with_their_kinds(platform: Platform, city: Caller) -> None:
    """`orgs import`: the bulk `orgs add`, all or nothing, the same rules (no city, no near-duplicate)."""
    import io

    from cityward.adapters.inventory_files import FileFormat

    def load(text: str) -> organizations.OrgImport:
        return organizations.import_orgs(platform.uow, city, io.BytesIO(text.encode()), "orgs.csv", FileFormat.CSV)

    bad = ("name,kind,brand\nTideway,integrator,\nHarbour Partners,city,\ntideway ,installer,\n"
           "Springfield,consultant,\nQuarrow,manufacturer,\nNoKind,,\n")
    with pytest.raises(InvalidInput) as info:
        load(bad)
    where = {(p.row, p.field) for p in info.value.problems}
    assert where == {(3, "kind"), (4, "name"), (5, "kind"), (7, "kind")}
    assert [o.name for o in organizations.list_orgs(platform.uow, city)] == ["Springfield"]
    done = load("name,kind,brand\nTideway,integrator,\nQuarrow,manufacturer,\n")
    assert done.created == ["Tideway", "Quarrow"] and done.unchanged == []
    assert load("name,kind\nTIDEWAY,integrator\n").unchanged == ["Tideway"]
    assert organizations.get_org(platform.uow, city, "quarrow").brand == "Quarrow"
    import_csv(platform, city, csv_bytes([device(1, zone="downtown", maintainer="tideway")]), create_missing=True)
