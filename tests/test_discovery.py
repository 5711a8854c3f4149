"""Discovery: announced devices wait, untrusted, until a city operator approves or rejects them."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from cityward.adapters.secretbox import SecretBox, SecretUnreadable
from cityward.adapters.storage.models import AuditEventRow, DeviceSecretRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller, Role
from cityward.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from cityward.services import credentials, discovery, inventory, organizations, zones
from tests.conftest import caller_for
from tests.helpers import announce, csv_bytes, device, import_csv

HELLO = {"v": 1, "device_id": "CAM-77", "kind": "camera", "brand": "Lumo", "model": "L100",
         "firmware_version": "5.5.0", "serial": "Q1", "mac": "02:aa:00:00:00:01", "protocols": ["mqtt"],
         "at": "2026-11-25T12:00:00Z"}


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "downtown", "high")
    organizations.create_org(platform.uow, city, "Acme Integrators", "integrator")
    import_csv(platform, city, csv_bytes(device(i) for i in range(3)), create_missing=True)
    return city


def _audit_actions(platform: Platform) -> list[str]:
    with platform.uow() as uow:
        return list(uow.session.scalars(select(AuditEventRow.action).order_by(AuditEventRow.seq)))


def test_approval_enters_the_inventory(platform: Platform, fleet: Caller) -> None:
    announce(platform, HELLO)
    pending = discovery.list_discovered(platform.uow, fleet)
    assert [(d.device_id, d.status, d.kind, d.serial) for d in pending] == [("CAM-77", "pending", "camera", "Q1")]
    with pytest.raises(NotFound):
        inventory.get_device(platform.uow, fleet, "CAM-77")  # not a target of anything yet

    # Partners and viewers may not decide; partners do not even see unknown devices.
    integrator = caller_for(platform, "Acme Integrators", Role.ADMIN)
    with pytest.raises(PermissionDenied):
        discovery.list_discovered(platform.uow, integrator)  # the city's to see (README, "Who sees what")
    with pytest.raises(PermissionDenied):
        discovery.approve(platform.uow, integrator, "CAM-77", "downtown")
    viewer = Caller(actor="t", org_id=fleet.org_id, org_name=fleet.org_name, org_kind=fleet.org_kind,
                    role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        discovery.approve(platform.uow, viewer, "CAM-77", "downtown")

    with pytest.raises(InvalidInput) as exc:  # a zone that does not exist: nothing changes
        discovery.approve(platform.uow, fleet, "CAM-77", "nowhere")
    assert [p.field for p in exc.value.problems] == ["zone"]
    assert discovery.list_discovered(platform.uow, fleet)[0].status == "pending"

    view = discovery.approve(platform.uow, fleet, "CAM-77", "downtown")
    assert (view.id, view.kind, view.zone, view.firmware_version, view.protocol) == (
        "CAM-77", "camera", "downtown", "5.5.0", "mqtt")
    assert discovery.list_discovered(platform.uow, fleet) == []
    with pytest.raises(Conflict):
        discovery.reject(platform.uow, fleet, "CAM-77", "too late")
    assert {"discovery.announced", "devices.created", "discovery.approved"} <= set(_audit_actions(platform))


def test_rejected_device_stays_rejected(platform: Platform, fleet: Caller) -> None:
    announce(platform, {**HELLO, "device_id": "ROGUE-1"})
    with pytest.raises(InvalidInput):
        discovery.reject(platform.uow, fleet, "ROGUE-1", "  ")
    discovery.reject(platform.uow, fleet, "ROGUE-1", "not installed by us")
    announce(platform, {**HELLO, "device_id": "ROGUE-1"})
    [row] = discovery.list_discovered(platform.uow, fleet, "rejected")
    assert (row.device_id, row.announcements, row.reason) == ("ROGUE-1", 2, "not installed by us")
    with pytest.raises(Conflict):
        discovery.approve(platform.uow, fleet, "ROGUE-1", "downtown")


@pytest.mark.parametrize("text, count", [("127.0.0.1-127.0.0.3", 3), ("10.0.0.0/30", 2), ("::1", 1)])
def test_parse_range(text: str, count: int) -> None:
    assert len(discovery.parse_range(text)) == count


@pytest.mark.parametrize("text", ["10.0.0.5-10.0.0.1", "nonsense", "10.0.0.0/8", "10.0.0.1-::2"])
def test_parse_range_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        discovery.parse_range(text)


def test_handover_import_is_encrypted_all_or_nothing(platform: Platform, fleet: Caller) -> None:
    box = SecretBox(platform.settings.secret_key_bytes())
    n = credentials.import_handover(platform.uow, fleet, box, io.BytesIO(
        b"device_id,password\nSL-00000,Factory-1234\nSL-00001,\xc3\xa9t\xc3\xa9-pass\n"), "handover.csv")
    assert n == 2
    with platform.uow() as uow:
        blobs = dict(uow.session.execute(select(DeviceSecretRow.device_id, DeviceSecretRow.ciphertext)).all())
    assert b"Factory-1234" not in blobs["SL-00000"]
    assert credentials.load_secrets(platform.uow, box, credentials.ADMIN) == {"SL-00000": "Factory-1234",
                                                                              "SL-00001": "été-pass"}
    with pytest.raises(SecretUnreadable):  # a ciphertext moved to another device does not open
        box.open("SL-00001", credentials.ADMIN, blobs["SL-00000"])
    with pytest.raises(SecretUnreadable):
        SecretBox(b"\x01" * 32).open("SL-00000", credentials.ADMIN, blobs["SL-00000"])

    events = len(_audit_actions(platform))
    for bad, where in [(b"device_id,password\nSL-00002,ok-pass\nSL-99999,x\n", "SL-99999"),
                       (b"device_id,password\nSL-00002,ok\nSL-00002,again\n", "row 3"),
                       (b"id,pw\nSL-00002,x\n", "header"),
                       (b"device_id,password\nSL-00002,\n", "row 2"),
                       (b'{"SL-00002": 5}', "row 1"), (b"{nope", "JSON")]:
        with pytest.raises(InvalidInput) as exc:
            credentials.import_handover(platform.uow, fleet, box, io.BytesIO(bad), "handover.csv")
        text = str(exc.value) + " ".join(f"row {p.row} {p.source}" for p in exc.value.problems)
        assert where in text, text
    assert len(_audit_actions(platform)) == events
    with platform.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(DeviceSecretRow)) == 2


def test_an_announcement_cannot_rewrite_an_inventory_device(platform: Platform, fleet: Caller) -> None:
    announce(platform, {**HELLO, "device_id": "IMPOSTOR-1"})
    import_csv(platform, fleet, csv_bytes([device(7, id="IMPOSTOR-1")]))
    with pytest.raises(Conflict):
        discovery.approve(platform.uow, fleet, "IMPOSTOR-1", "downtown")
    assert inventory.get_device(platform.uow, fleet, "IMPOSTOR-1").kind == "streetlight"
