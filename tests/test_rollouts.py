"""Rollout planning and control on both backends: what is planned, skipped and refused (with
nothing stored and nothing sent), approvals, responsibility, maintenance windows, and results that
arrive for actions already decided."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import (
    DeviceCommandRow,
    DeviceStateRow,
    DiscoveredDeviceRow,
    RolloutActionRow,
    RolloutRow,
)
from cityward.bootstrap import Platform
from cityward.domain.firmware import signed_message
from cityward.domain.organizations import Caller, Role
from cityward.domain.rollouts import Operation, RolloutStateConflict, WaveOptions
from cityward.domain.zones import MaintenanceWindow
from cityward.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from cityward.services import auditlog, credentials, firmware, organizations, rollouts, zones
from cityward.services.inventory import DeviceFilter
from cityward.services.rollout_executor import Dispatch, Executor, ExecutorOptions
from cityward.services.rollouts import RolloutRequest, Target
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv
from tests.rollout_support import finish_rollout, offline_executor

HEADER = ["id", "kind", "brand", "model", "firmware_version", "zone", "protocol", "serial", "mac"]
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test manufacturer key").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"someone else").digest())


def _pub(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _sign(key: Ed25519PrivateKey, brand: str, model: str, version: str, image: bytes) -> str:
    digest = hashlib.sha256(image).hexdigest()
    return base64.b64encode(key.sign(signed_message(brand, model, version, digest))).decode()


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "north")
    zones.create_zone(platform.uow, city, "south")
    zones.create_zone(platform.uow, city, "hospital", "critical")
    zones.create_zone(platform.uow, city, "tunnel", window=MaintenanceWindow("0 0 31 2 *", 60))  # 31 February
    organizations.create_org(platform.uow, city, "Acme Integrators", "integrator")
    zones.assign_duty(platform.uow, city, "north", "maintain", "Acme Integrators")
    rows = [device(i, zone="north" if i <= 4 else "south", protocol="mqtt") for i in range(1, 9)]
    rows += [device(20, zone="hospital", protocol="mqtt"), device(30, zone="tunnel", protocol="mqtt"),
             device(40, zone="south", brand="Other", model="O1", protocol="mqtt"),
             device(50, zone="south")]  # no protocol: unreachable
    import_csv(platform, city, csv_bytes(rows, HEADER), create_missing=True)
    return city


def _req(op: Operation = Operation.REBOOT, **target: object) -> RolloutRequest:
    return RolloutRequest("test", op, Target(**target),  # type: ignore[arg-type]
                          WaveOptions(canary=1, percentages=(50, 100), concurrency=2))


def _stored(platform: Platform) -> tuple[int, int]:
    with platform.uow() as uow:
        return (uow.session.scalar(select(func.count()).select_from(RolloutRow)) or 0,
                uow.session.scalar(select(func.count()).select_from(RolloutActionRow)) or 0)


def test_plan_is_a_dry_run_and_create_stores_it(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    req = _req(selector=DeviceFilter(zone="south"))
    plan = rollouts.plan(platform.uow, fleet, req, tmp_path)
    assert _stored(platform) == (0, 0)
    assert plan.devices == 5 and [len(w) for w in plan.waves] == [1, 2, 2]
    assert {(s.device_id, s.reason) for s in plan.skipped} == {
        ("SL-00050", "no way to reach it (protocol or address missing in the inventory)")}
    assert plan.windows == {"south": "no window: any time"} and not plan.needs_approval
    rid, _ = rollouts.create(platform.uow, fleet, req, tmp_path)
    view = rollouts.get(platform.uow, fleet, rid)
    assert (view.status, view.total, view.skipped) == ("ready", 5, 1)
    assert [w.size for w in view.waves] == [1, 2, 2]


def test_bad_targets_and_options_are_refused(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="zone 'nowhere'"):
        rollouts.plan(platform.uow, fleet, _req(selector=DeviceFilter(zone="nowhere")), tmp_path)
    with pytest.raises(InvalidInput, match="no devices match"):
        rollouts.plan(platform.uow, fleet, _req(selector=DeviceFilter(kind="toaster")), tmp_path)
    with pytest.raises(InvalidInput, match="never opens"):
        rollouts.create(platform.uow, fleet, _req(selector=DeviceFilter(zone="tunnel")), tmp_path)
    with pytest.raises(InvalidInput, match="all 1 matching devices are skipped"):
        rollouts.create(platform.uow, fleet, _req(device_ids=("SL-00050",)), tmp_path)
    bad = RolloutRequest("x", Operation.REBOOT, Target(), WaveOptions(canary=-1, percentages=(60, 30)))
    with pytest.raises(InvalidInput) as info:
        rollouts.create(platform.uow, fleet, bad, tmp_path)
    assert {p.field for p in info.value.problems} == {"canary", "waves"}
    with pytest.raises(InvalidInput, match="needs --release"):
        rollouts.create(platform.uow, fleet, _req(Operation.UPGRADE_FIRMWARE), tmp_path)
    assert _stored(platform) == (0, 0)


def test_one_rollout_per_device_at_a_time(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    first, _ = rollouts.create(platform.uow, fleet, _req(selector=DeviceFilter(zone="north")), tmp_path)
    with pytest.raises(InvalidInput, match="skipped") as info:
        rollouts.create(platform.uow, fleet, _req(selector=DeviceFilter(zone="north")), tmp_path)
    skip = info.value.problems[0]  # the reason is the problem; it has no location (no row or field)
    reason = f"in rollout {first} already (one rollout per device at a time)"
    assert (skip.field, skip.message) == (None, f"{reason}: 4 devices")
    second, plan = rollouts.create(platform.uow, fleet, _req(device_ids=("SL-00001", "SL-00002", "SL-00005")),
                                   tmp_path)
    assert {s.device_id for s in plan.skipped} == {"SL-00001", "SL-00002"} and plan.devices == 1
    rollouts.abort(platform.uow, fleet, first)  # an aborted rollout frees its devices
    third, plan = rollouts.create(platform.uow, fleet, _req(selector=DeviceFilter(zone="north")), tmp_path)
    assert third > second and plan.devices == 4


def test_critical_zones_need_another_users_approval(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    rid, plan = rollouts.create(platform.uow, fleet, _req(selector=DeviceFilter(zone="hospital")), tmp_path)
    assert plan.needs_approval and plan.approval_zones == ["hospital"]
    with pytest.raises(Conflict, match="awaiting_approval"):
        rollouts.start(platform.uow, fleet, rid)
    with pytest.raises(PermissionDenied, match="created by you"):
        rollouts.approve(platform.uow, fleet, rid)
    with pytest.raises(PermissionDenied, match="city operator"):
        rollouts.approve(platform.uow, caller_for(platform, "Acme Integrators", Role.ADMIN), rid)
    rollouts.approve(platform.uow, caller_for(platform, "Springfield"), rid)
    rollouts.start(platform.uow, fleet, rid)
    assert rollouts.get(platform.uow, fleet, rid).status == "running"


def test_an_integrator_rolls_out_only_where_it_maintains(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    acme = caller_for(platform, "Acme Integrators")
    plan = rollouts.plan(platform.uow, acme, _req(), tmp_path)
    assert sorted(d for w in plan.waves for d in w) == [f"SL-0000{i}" for i in range(1, 5)]
    with pytest.raises(InvalidInput, match="not yours") as info:
        rollouts.plan(platform.uow, acme, _req(device_ids=("SL-00001", "SL-00005")), tmp_path)
    assert [p.field for p in info.value.problems] == ["device SL-00005"]
    rid, _ = rollouts.create(platform.uow, fleet, _req(selector=DeviceFilter(zone="south")), tmp_path)
    with pytest.raises(NotFound):  # the city's rollout is not Acme's to see or steer
        rollouts.pause(platform.uow, acme, rid)


def test_firmware_is_verified_before_it_enters_the_catalog(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    store = tmp_path / "fw"
    firmware.register_key(platform.uow, fleet, "Lumo", "lumo-1", _pub(KEY))
    image = b"image v2 " * 100
    good = _sign(KEY, "Lumo", "L100", "2.0.0", image)
    refusals = [
        (dict(image=image + b"!", signature=good), "bad signature"),  # tampered image
        (dict(image=image, signature=_sign(OTHER_KEY, "Lumo", "L100", "2.0.0", image)), "bad signature"),
        (dict(image=image, signature=_sign(KEY, "Lumo", "L200", "2.0.0", image)), "bad signature"),  # other model
        (dict(image=image, signature="%%%"), "not base64"),
        (dict(image=b"", signature=good), "1 byte"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(InvalidInput) as info:
            firmware.add_release(platform.uow, fleet, store, brand="Lumo", model="L100", version="2.0.0",
                                 key_id="lumo-1", **kwargs)  # type: ignore[arg-type]
        assert message in str(info.value.problems), kwargs
    with pytest.raises(InvalidInput, match="belongs to Lumo, not Other"):
        firmware.add_release(platform.uow, fleet, store, brand="Other", model="O1", version="2.0.0", image=image,
                             signature=good, key_id="lumo-1")
    assert firmware.list_releases(platform.uow) == []
    assert not store.exists() or not any(store.iterdir())  # nothing refused was kept
    release = firmware.add_release(platform.uow, fleet, store, brand="Lumo", model="L100", version="2.0.0",
                                   image=image, signature=good, key_id="lumo-1")
    plan = rollouts.plan(platform.uow, fleet, RolloutRequest(
        "fw", Operation.UPGRADE_FIRMWARE, Target(selector=DeviceFilter(zone="south")), release=release.id), store)
    assert ("SL-00040", "the firmware is for Lumo L100, not this product") in {
        (s.device_id, s.reason) for s in plan.skipped}
    (store / release.sha256).write_bytes(image[:-1] + b"?")  # the stored file changes behind our back
    with pytest.raises(InvalidInput, match="no longer verifies"):
        rollouts.plan(platform.uow, fleet, RolloutRequest(
            "fw", Operation.UPGRADE_FIRMWARE, Target(selector=DeviceFilter(zone="south")), release=release.id),
            store)


def test_windows_gate_claims_and_stale_results_change_nothing(platform: Platform, fleet: Caller,
                                                              tmp_path: Path) -> None:
    now = datetime.now(UTC)
    closed = MaintenanceWindow(f"0 {(now.hour + 12) % 24} * * *", 60)  # opens twelve hours from now
    zones.create_zone(platform.uow, fleet, "market", window=closed)
    import_csv(platform, fleet, csv_bytes([device(60, zone="market", protocol="mqtt")], HEADER))
    rid, plan = rollouts.create(platform.uow, fleet, RolloutRequest(
        "r", Operation.REBOOT, Target(device_ids=("SL-00001", "SL-00060")),
        WaveOptions(canary=0, percentages=(100,), concurrency=10)), tmp_path)
    assert "opens" in plan.windows["market"]
    rollouts.start(platform.uow, fleet, rid)
    executor = Executor(platform.uow, SecretBox(platform.settings.secret_key_bytes()),
                        platform.settings.secret_key_bytes(), ExecutorOptions(mqtt_url=None, firmware_store=tmp_path))
    claimed, busy = executor.claim_all()
    dispatches = [d for a, c in claimed if (d := executor.build(a, c)) is not None]
    assert [d.device_id for d in dispatches] == ["SL-00001"] and busy == {rid}  # the market waits for its window
    first: Dispatch = dispatches[0]
    assert executor.build(first.action_id, "another command") is None
    executor._finish(first, "succeeded", None)
    stale = Dispatch(**{**first.__dict__, "command_id": first.command_id + "-old"})
    executor._finish(stale, "failed", "late answer")  # a result for an action already decided
    executor._finish(first, "failed", "replayed")
    done = {a.device_id: a.status for a in rollouts.actions(platform.uow, fleet, rid)}
    assert done == {"SL-00001": "succeeded", "SL-00060": "pending"}


def test_reveal_is_for_admins_holding_the_duty_and_audited(platform: Platform, fleet: Caller) -> None:
    box = SecretBox(platform.settings.secret_key_bytes())
    zones.assign_duty(platform.uow, fleet, "north", "credentials", "Acme Integrators")
    with platform.uow(write=True) as uow:
        credentials.store_secrets(uow.session, box, credentials.ADMIN, {"SL-00001": "s3cret-" + "x" * 20},
                                  uow.clock())
        uow.commit()
    assert credentials.reveal(platform.uow, box, fleet, "SL-00001") == "s3cret-" + "x" * 20
    assert credentials.reveal(platform.uow, box, caller_for(platform, "Acme Integrators", Role.ADMIN),
                              "SL-00001") == "s3cret-" + "x" * 20
    for who in (caller_for(platform, "Acme Integrators", Role.OPERATOR), caller_for(platform, "Springfield")):
        with pytest.raises(PermissionDenied):
            credentials.reveal(platform.uow, box, who, "SL-00001")
    with pytest.raises(NotFound, match="no admin password"):
        credentials.reveal(platform.uow, box, fleet, "SL-00002")
    events = auditlog.list_events(platform.uow, fleet, action="credentials.revealed")
    assert len(events) == 2 and all("s3cret" not in str(e) for e in events)


def test_certificates_come_from_the_city_ca_and_stay_secret(platform: Platform, fleet: Caller,
                                                            tmp_path: Path) -> None:
    rid, _ = rollouts.create(platform.uow, fleet, RolloutRequest(
        "certs", Operation.RENEW_CERTIFICATE, Target(device_ids=("SL-00001", "SL-00002")),
        WaveOptions(canary=0, percentages=(100,))), tmp_path)
    rollouts.start(platform.uow, fleet, rid)
    executor = Executor(platform.uow, SecretBox(platform.settings.secret_key_bytes()),
                        platform.settings.secret_key_bytes(), ExecutorOptions(mqtt_url=None, firmware_store=tmp_path))
    claimed, _ = executor.claim_all()
    built = [executor.build(a, c) for a, c in claimed]
    assert len(built) == 2 and all(d is not None for d in built)
    first = built[0]
    assert first is not None
    cert = x509.load_pem_x509_certificate(first.params["certificate"].encode())
    key = serialization.load_pem_private_key(first.params["private_key"].encode(), password=None)
    assert cert.subject.rfc4514_string() == f"CN={first.device_id}" and "device CA" in cert.issuer.rfc4514_string()
    assert cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert executor.build(first.action_id, first.command_id) == first  # a re-send carries the same key
    events = auditlog.list_events(platform.uow, fleet, limit=1000)
    assert any(e.action == "city_ca.created" for e in events)
    assert not any("PRIVATE KEY" in str(e) for e in events)


def test_a_finished_rollout_refuses_every_command_and_keeps_its_outcome(platform: Platform, fleet: Caller,
                                                                         tmp_path: Path) -> None:
    """Issue 14: pause, resume and abort on a succeeded rollout were accepted, and abort rewrote
    its outcome to "aborted"."""
    req = RolloutRequest("r", Operation.REBOOT, Target(device_ids=("SL-00001", "SL-00002")),
                         WaveOptions(canary=1, percentages=(100,), failure_threshold=100, success_threshold=0))
    done, _ = rollouts.create(platform.uow, fleet, req, tmp_path)
    rollouts.start(platform.uow, fleet, done)
    finish_rollout(platform, done, tmp_path)
    failed, _ = rollouts.create(platform.uow, fleet, replace(req, target=Target(device_ids=("SL-00005",))), tmp_path)
    rollouts.start(platform.uow, fleet, failed)
    finish_rollout(platform, failed, tmp_path, failing=frozenset({"SL-00005"}))
    aborted, _ = rollouts.create(platform.uow, fleet, replace(req, target=Target(device_ids=("SL-00006",))),
                                 tmp_path)
    rollouts.abort(platform.uow, fleet, aborted)
    approver = caller_for(platform, "Springfield")
    for rid, state in ((done, "succeeded"), (failed, "finished with failures"), (aborted, "aborted")):
        before = rollouts.get(platform.uow, fleet, rid)
        assert before.status == state
        events = len(auditlog.list_events(platform.uow, fleet, limit=1000))
        for command, act in (("pause", rollouts.pause), ("resume", rollouts.resume), ("abort", rollouts.abort),
                             ("start", rollouts.start)):
            with pytest.raises(RolloutStateConflict, match=f"rollout {rid} is {state}: it cannot be") as info:
                act(platform.uow, fleet, rid)
            assert (info.value.state.value, info.value.command.value) == (state, command)
            assert isinstance(info.value, Conflict) and info.value.hint
        with pytest.raises(RolloutStateConflict, match=state):
            rollouts.approve(platform.uow, approver, rid)
        assert rollouts.get(platform.uow, fleet, rid) == before  # the outcome is not rewritten
        assert len(auditlog.list_events(platform.uow, fleet, limit=1000)) == events  # nothing recorded
    assert rollouts.get(platform.uow, fleet, done).counts == {"succeeded": 2}


def test_a_rollout_is_finished_only_once_the_executor_closed_its_waves(platform: Platform, fleet: Caller,
                                                                      tmp_path: Path) -> None:
    """Every action decided is not yet an outcome: the executor's threshold verdict may still pause
    the wave, so until it closes the wave the rollout is running (and may be paused or aborted)."""
    rid, _ = rollouts.create(platform.uow, fleet, RolloutRequest(
        "r", Operation.REBOOT, Target(device_ids=("SL-00001",)), WaveOptions(canary=0, percentages=(100,), retries=0)),
        tmp_path)
    rollouts.start(platform.uow, fleet, rid)
    executor = offline_executor(platform, tmp_path)
    (d,) = executor.build_many(executor.claim_all()[0])
    executor._finish(d, "failed", "timeout: no answer")
    assert rollouts.get(platform.uow, fleet, rid).status == "running"  # the wave is still open
    executor.claim_all()  # the wave failed its threshold: the executor pauses it
    view = rollouts.get(platform.uow, fleet, rid)
    assert view.status == "paused" and "wave 1: 1 of 1 failed" in (view.control_reason or "")
    rollouts.resume(platform.uow, fleet, rid)  # accepts the failure
    executor.claim_all()
    assert rollouts.get(platform.uow, fleet, rid).status == "finished with failures"
    with pytest.raises(RolloutStateConflict, match="finished with failures"):
        rollouts.pause(platform.uow, fleet, rid)


def _record(platform: Platform, *rows: object) -> None:
    """Facts on record, as ingestion, discovery and `devices command` leave them."""
    with platform.uow(write=True) as uow:
        uow.session.add_all(rows)
        uow.commit()


def _state_row(device_id: str, *, online: bool, seen: datetime, reason: str | None = None) -> DeviceStateRow:
    return DeviceStateRow(device_id=device_id, online=online, offline_reason=reason, status_at=seen, last_seen=seen,
                          transport="mqtt", firmware_version="1.2.3", credential_state="unknown")


def _command_row(device_id: str, action: str, status: str, detail: str | None, at: datetime) -> DeviceCommandRow:
    return DeviceCommandRow(command_id=str(uuid.uuid4()), device_id=device_id, action=action, params={},
                            status=status, detail=detail, issued_by="local:test", issued_at=at, expires_at=at,
                            updated_at=at)


def test_plan_skips_devices_that_cannot_succeed_now(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    """Issue 14: the canary was a device that had just failed as unreachable, so the rollout paused
    at once. Offline devices, devices unreachable in their last command (and silent since) and
    devices without the action are skipped, each with its reason."""
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    _record(platform,
            _state_row("SL-00001", online=False, seen=now - hour, reason="will"),
            _command_row("SL-00002", "reboot", "failed", "unreachable: 127.0.3.2:8080 refused the connection",
                         now - hour),
            # unreachable once, but it reported since: it is back
            _state_row("SL-00003", online=True, seen=now),
            _command_row("SL-00003", "reboot", "failed", "unreachable: no route", now - hour),
            # unreachable once, then a command succeeded
            _command_row("SL-00004", "reboot", "failed", "unreachable: no route", now - 2 * hour),
            _command_row("SL-00004", "set_config", "succeeded", None, now - hour),
            _command_row("SL-00005", "reboot", "rejected", "unknown action", now - hour),
            DiscoveredDeviceRow(device_id="SL-00006", status="approved", source="mqtt", address=None,
                                hello={"actions": ["set_config", "set_password"], "rollback": False},
                                first_seen=now, last_seen=now))
    plan = rollouts.plan(platform.uow, fleet, _req(device_ids=tuple(f"SL-0000{i}" for i in range(1, 8))), tmp_path)
    reasons = {s.device_id: s.reason for s in plan.skipped}
    assert reasons["SL-00001"].startswith("offline since") and "(will)" in reasons["SL-00001"]
    assert reasons["SL-00002"].startswith("unreachable in its last command") and "refused" in reasons["SL-00002"]
    assert reasons["SL-00005"] == "does not support reboot (it answered 'unknown action')"
    assert reasons["SL-00006"] == "does not support reboot (not among the actions its hello announces)"
    assert sorted(d for w in plan.waves for d in w) == ["SL-00003", "SL-00004", "SL-00007"]
    rollback = rollouts.plan(platform.uow, fleet, RolloutRequest(
        "rb", Operation.ROLLBACK_FIRMWARE, Target(device_ids=("SL-00006", "SL-00007"))), tmp_path)
    assert {s.device_id: s.reason for s in rollback.skipped} == {
        "SL-00006": "does not support rollback_firmware (not among the actions its hello announces)"}


def test_the_canary_is_drawn_from_devices_that_reported_recently(platform: Platform, fleet: Caller,
                                                                 tmp_path: Path) -> None:
    now = datetime.now(UTC)
    _record(platform, _state_row("SL-00001", online=True, seen=now - timedelta(hours=3)),  # long silent
            _state_row("SL-00007", online=True, seen=now - timedelta(minutes=2)),
            _state_row("SL-00003", online=True, seen=now))
    plan = rollouts.plan(platform.uow, fleet, RolloutRequest(
        "r", Operation.REBOOT, Target(device_ids=tuple(f"SL-0000{i}" for i in range(1, 9))),
        WaveOptions(canary=2, percentages=(50, 100))), tmp_path)
    assert sorted(plan.waves[0]) == ["SL-00003", "SL-00007"]
    assert sorted(d for w in plan.waves for d in w) == [f"SL-0000{i}" for i in range(1, 9)]  # nobody lost
