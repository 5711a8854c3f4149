"""Inventory import/export through the services, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cityward.adapters.inventory_files import FileFormat
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.errors import InvalidInput
from cityward.services import inventory, organizations, zones
from tests.conftest import caller_for
from tests.helpers import HEADER, csv_bytes, device, import_csv, state


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "downtown", "high")
    organizations.create_org(platform.uow, city, "Acme Integrators", "integrator")
    return city


def _export(platform: Platform, caller: Caller, fmt: FileFormat) -> str:
    buf = io.StringIO()
    inventory.export_devices(platform.uow, caller, buf, fmt)
    return buf.getvalue()


def test_import_creates_then_updates(platform: Platform, fleet: Caller) -> None:
    report = import_csv(platform, fleet, csv_bytes(device(i) for i in range(50)))
    assert (report.created, report.updated, report.rows_read) == (50, 0, 50)
    assert report.created_products == ["Lumo L100"]
    again = import_csv(platform, fleet, csv_bytes(device(i, firmware_version="2.0" if i < 45 else "1.2.3")
                                                  for i in range(40, 60)))
    assert (again.created, again.updated, again.unchanged) == (10, 5, 5)
    d = inventory.get_device(platform.uow, fleet, "SL-00044")
    assert d.firmware_version == "2.0" and d.origin_status == "unknown"
    assert inventory.list_devices(platform.uow, fleet).total == 60


def test_columns_absent_from_file_are_kept(platform: Platform, fleet: Caller) -> None:
    import_csv(platform, fleet, csv_bytes([device(1, maintainer="Acme Integrators")]))
    slim = ["id", "kind", "brand", "model", "firmware_version", "zone"]
    import_csv(platform, fleet, csv_bytes([device(1, firmware_version="9")], slim))
    d = inventory.get_device(platform.uow, fleet, "SL-00001")
    assert d.firmware_version == "9" and d.serial == "S1" and d.responsible["maintain"] == "Acme Integrators"


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSON])
def test_export_round_trips(platform: Platform, fleet: Caller, fmt: FileFormat) -> None:
    rows = [device(1, tags="a;b"), device(2, serial="=cmd|' /C calc'!A0", mac="")]
    header = [*HEADER, "tags", "latitude", "longitude", "installed_at", "address", "protocol"]
    rows[0].update(latitude="-33.5", longitude="151.25", installed_at="2024-02-29",
                   address="[fe80::1]:8443", protocol="mqtt")
    import_csv(platform, fleet, csv_bytes(rows, header))
    first = _export(platform, fleet, fmt)
    if fmt is FileFormat.CSV:
        assert "'=cmd" in first  # neutralized for spreadsheets
        assert ",-33.5," in first  # plain numbers are left alone
    report = inventory.import_devices(platform.uow, fleet, io.BytesIO(first.encode()), f"x.{fmt}", fmt)
    assert (report.updated, report.unchanged) == (0, 2)  # lossless: nothing differs after the trip
    assert _export(platform, fleet, fmt) == first
    d = inventory.get_device(platform.uow, fleet, "SL-00002")
    assert d.serial == "=cmd|' /C calc'!A0"


def test_json_import(platform: Platform, fleet: Caller) -> None:
    data = json.dumps([{**device(i), "tags": ["x", "y"], "latitude": 1.5, "longitude": 2} for i in range(3)])
    report = inventory.import_devices(platform.uow, fleet, io.BytesIO(data.encode()), "f.json", FileFormat.JSON)
    assert report.created == 3
    assert inventory.get_device(platform.uow, fleet, "SL-00001").record["tags"] == ["x", "y"]


def _refused(platform: Platform, caller: Caller, data: bytes, fmt: FileFormat = FileFormat.CSV,
             **kw: object) -> InvalidInput:
    before = state(platform)
    with pytest.raises(InvalidInput) as info:
        inventory.import_devices(platform.uow, caller, io.BytesIO(data), f"bad.{fmt}", fmt, **kw)  # type: ignore[arg-type]
    assert state(platform) == before, "a refused import must leave the database unchanged"
    return info.value


def _where(exc: InvalidInput) -> set[tuple[int | None, str | None]]:
    return {(p.row, p.field) for p in exc.problems}


@pytest.mark.parametrize(("field", "value"), [
    ("id", "bad id!"), ("id", ""), ("kind", "toaster"), ("brand", ""), ("model", "x" * 200),
    ("firmware_version", ""), ("zone", ""), ("mac", "zz:zz"), ("serial", "a\x01b"),
    ("address", "not a host!"), ("protocol", "coap"), ("latitude", "91"), ("longitude", "east"),
    ("installed_at", "2024-13-01"), ("tags", "good;b@d"), ("hardware_version", "h" * 65),
])
def test_bad_value_in_each_field(platform: Platform, fleet: Caller, field: str, value: str) -> None:
    header = [*HEADER, "address", "protocol", "latitude", "longitude", "installed_at", "tags",
              "hardware_version"]
    rows = [device(1), device(2, **{field: value}), device(3)]
    if field in ("latitude", "longitude"):
        rows[1].update({"latitude": "1", "longitude": "1", field: value})
    exc = _refused(platform, fleet, csv_bytes(rows, header))
    assert (3, field) in _where(exc)
    assert "nothing was imported" in exc.message


def test_partial_imports_only_good_rows(platform: Platform, fleet: Caller) -> None:
    rows = [device(1), device(2, kind="toaster"), device(3), device(1, serial="S99"),
            device(4, zone="nowhere"), device(5, mac=device(3)["mac"])]
    report = import_csv(platform, fleet, csv_bytes(rows), partial=True)
    assert report.created == 2
    assert {(p.row, p.field) for p in report.problems} == {(3, "kind"), (5, "id"), (6, "zone"), (7, "mac")}
    ids = [d.id for d in inventory.list_devices(platform.uow, fleet).items]
    assert ids == ["SL-00001", "SL-00003"]


def test_duplicates_in_file_and_against_fleet(platform: Platform, fleet: Caller) -> None:
    import_csv(platform, fleet, csv_bytes([device(1)]))
    rows = [device(2), device(2, serial="S77", mac=""), device(3, mac=device(1)["mac"]),
            device(4, serial="S1"), device(5, serial="S5"), device(6, serial="S5", mac="")]
    exc = _refused(platform, fleet, csv_bytes(rows))
    assert _where(exc) == {(3, "id"), (4, "mac"), (5, "serial"), (7, "serial")}
    assert "repeats row 2" in str(next(p for p in exc.problems if p.field == "id"))
    assert "already belongs to device SL-00001" in " ".join(p.message for p in exc.problems)
    assert exc.problems[0].source == "bad.csv"


def test_same_serial_under_another_brand_is_fine(platform: Platform, fleet: Caller) -> None:
    rows = [device(1), device(2, brand="Other", serial="S1")]
    assert import_csv(platform, fleet, csv_bytes(rows)).created == 2


def test_missing_references_and_create_missing(platform: Platform, fleet: Caller) -> None:
    """--create-missing creates zones, never organizations: an unknown one is refused with its row,
    field and the command that creates it, and nothing is created."""
    rows = [device(1, zone="harbour", maintainer="New Co")]
    exc = _refused(platform, fleet, csv_bytes(rows))
    assert _where(exc) == {(2, "zone"), (2, "maintainer")}
    assert "cityward zones add harbour" in str(exc.problems)
    exc = _refused(platform, fleet, csv_bytes(rows), create_missing=True)
    assert _where(exc) == {(2, "maintainer")}
    assert "cityward orgs add 'New Co' --kind KIND" in exc.problems[0].message
    assert [z.name for z in zones.list_zones(platform.uow, fleet)] == ["downtown"]
    organizations.create_org(platform.uow, fleet, "New Co", "installer")
    report = import_csv(platform, fleet, csv_bytes(rows), create_missing=True)
    assert report.created_zones == ["harbour"]
    kinds = {o.name: o.kind for o in organizations.list_orgs(platform.uow, fleet)}
    assert kinds["New Co"] == "installer"
    assert inventory.get_device(platform.uow, fleet, "SL-00001").responsible["maintain"] == "New Co"


def test_an_owner_column_never_makes_another_city(platform: Platform, fleet: Caller) -> None:
    """The issue's story: a partner named as owner was created as kind city and saw every device."""
    rows = [device(i, owner="Harbour Partners") for i in range(3)]
    exc = _refused(platform, fleet, csv_bytes(rows, [*HEADER, "owner"]), create_missing=True)
    assert _where(exc) == {(2, "owner"), (3, "owner"), (4, "owner")}
    assert [o.name for o in organizations.list_orgs(platform.uow, fleet, "city")] == ["Springfield"]


def test_names_match_in_any_case_width_and_spacing(platform: Platform, fleet: Caller) -> None:
    """A file's "DOWNTOWN" is the zone "downtown", "acme  integrators" the organization, and one
    spelling of a new zone per file is created however many spellings the file uses."""
    rows = [device(1, zone="DOWNTOWN", maintainer="acme  integrators"),
            device(2, zone="\uff24owntown", maintainer="ACME INTEGRATORS"),
            device(3, zone="Pier 9"), device(4, zone="pier  9"), device(5, zone="PIER 9")]
    report = import_csv(platform, fleet, csv_bytes(rows), create_missing=True)
    assert report.created == 5 and report.created_zones == ["Pier 9"]
    assert sorted(z.name for z in zones.list_zones(platform.uow, fleet)) == ["Pier 9", "downtown"]
    one = inventory.get_device(platform.uow, fleet, "SL-00002")
    assert one.zone == "downtown" and one.responsible["maintain"] == "Acme Integrators"
    assert inventory.list_devices(platform.uow, fleet, inventory.DeviceFilter(zone="pier 9")).total == 3
    assert inventory.list_devices(platform.uow, fleet, inventory.DeviceFilter(org="ACME integrators")).total == 2


def test_a_partner_names_itself_in_any_case(platform: Platform, fleet: Caller) -> None:
    acme = caller_for(platform, "Acme Integrators")
    report = import_csv(platform, acme, csv_bytes([device(1, maintainer="acme integrators")]))
    assert report.created == 1
    assert inventory.list_devices(platform.uow, acme).total == 1


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "empty"),
    (b"id;kind;brand;model;firmware_version;zone\n1;streetlight;a;b;1;z\n", "semicolon"),
    (b"id,kind,brand,model\nx,streetlight,a,b\n", "required column is missing"),
    (b"id,kind,brand,model,firmware_version,zone,colour\n", "unknown column"),
    (b"id,kind,brand,model,firmware_version,zone,id\n", "column appears twice"),
    (b"id,kind,brand,model,firmware_version,zone\n", "no device rows"),
    (b"id,kind,brand,model,firmware_version,zone\nSL-1,streetlight,Lum\xe9,L,1,downtown\n", "UTF-8"),
    (b"id,kind,brand,model,firmware_version,zone\nSL-1,street\x00light,L,L,1,downtown\n", "NUL"),
])
def test_unusable_csv_files(platform: Platform, fleet: Caller, data: bytes, needle: str) -> None:
    exc = _refused(platform, fleet, data)
    assert needle in str(exc) + " ".join(str(p) for p in exc.problems)


def test_wrong_field_count_is_a_row_problem(platform: Platform, fleet: Caller) -> None:
    data = csv_bytes([device(1)]) + b"SL-2,streetlight\n"
    exc = _refused(platform, fleet, data)
    assert (3, None) in _where(exc) and "expected 9 fields" in exc.problems[0].message


def test_ignore_unknown_columns(platform: Platform, fleet: Caller) -> None:
    data = csv_bytes([{**device(1), "colour": "red"}], [*HEADER, "colour"])
    report = import_csv(platform, fleet, data, ignore_unknown=True)
    assert report.created == 1 and report.ignored_columns == ["colour"]


def test_gigabyte_single_line_is_refused_without_reading_it(platform: Platform, fleet: Caller,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:
        fh.write(b"id,kind,brand,model,firmware_version,zone\nSL-1,")
        fh.truncate(1 << 30)  # sparse: a 1 GB line without a newline, no disk used
    before = state(platform)
    with path.open("rb") as fh, pytest.raises(InvalidInput, match=r"row 2: line longer than"):
        inventory.import_devices(platform.uow, fleet, fh, "huge.csv", FileFormat.CSV)
        pytest.fail("unreachable")
    assert state(platform) == before


def test_long_real_line_is_refused(platform: Platform, fleet: Caller) -> None:
    data = b"id,kind,brand,model,firmware_version,zone\n" + b"x" * (3 << 20) + b"\n"
    assert "line longer than" in _refused(platform, fleet, data).message


@pytest.mark.parametrize(("data", "needle"), [
    (b'{"id": "x"}', "found an object"),
    (b"", "empty"),
    (b'[{"id": "SL-1"', "not valid JSON"),
    (b'[1, 2]', "expected an object"),
    (b'[{"id": "SL-1", "kind": "streetlight", "brand": "a", "model": "b", "firmware_version": "1", '
     b'"zone": "downtown", "colour": 1}]', "unknown field"),
    (b'[{"id": "SL-1", "kind": "streetlight", "brand": "a", "model": "b", "firmware_version": "1", '
     b'"zone": "downtown", "latitude": "north", "longitude": 1}]', "not a number"),
    (b'[{"id": "' + b"a" * (2 << 20) + b'"}]', "larger than"),
])
def test_unusable_json_files(platform: Platform, fleet: Caller, data: bytes, needle: str) -> None:
    exc = _refused(platform, fleet, data, FileFormat.JSON)
    assert needle in str(exc) + " ".join(str(p) for p in exc.problems)


def test_single_device_edit_uses_import_rules_and_logs_before_after(platform: Platform, fleet: Caller) -> None:
    from cityward.services import auditlog

    d = inventory.save_device(platform.uow, fleet, {k: v for k, v in device(1).items() if v != ""})
    assert d.mac == "02:00:00:00:00:01"
    inventory.save_device(platform.uow, fleet, {"id": "SL-00001", "kind": "streetlight", "brand": "Lumo",
                                                "model": "L100", "firmware_version": "2.0", "zone": "downtown"})
    assert inventory.get_device(platform.uow, fleet, "SL-00001").serial == "S1"  # kept
    with pytest.raises(InvalidInput) as info:
        inventory.save_device(platform.uow, fleet, {**device(2), "mac": "02:00:00:00:00:01"})
    assert info.value.problems[0].field == "mac"
    event = auditlog.list_events(platform.uow, fleet, action="devices.updated")[0]
    assert (event.before["firmware_version"], event.after["firmware_version"]) == ("1.2.3", "2.0")
    inventory.delete_device(platform.uow, fleet, "SL-00001")
    assert inventory.list_devices(platform.uow, fleet).total == 0
    assert auditlog.list_events(platform.uow, fleet, action="devices.deleted")[0].before["id"] == "SL-00001"
