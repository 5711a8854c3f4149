"""State ingestion: decoded device messages become stored facts, history and discoveries."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cityward.adapters.storage import states as states_store
from cityward.adapters.storage.models import (
    AuditEventRow,
    DeviceHistoryRow,
    DeviceRow,
    DeviceStateRow,
    DiscoveredDeviceRow,
)
from cityward.bootstrap import Platform
from cityward.domain import telemetry
from cityward.domain.organizations import Caller
from cityward.domain.policy.document import parse_policy
from cityward.services import audit, ingestion, inventory, organizations, zones
from cityward.services.ingestion import Ingestor
from cityward.services.policies import baseline_path
from tests.helpers import csv_bytes, device, import_csv

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _at(seconds: float = 0) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def state_msg(device_id: str, seq: int, *, boot: str = "b1", fw: str = "1.2.3", at: float = 0,
              **over: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1, "device_id": device_id, "seq": seq, "boot_id": boot, "at": _at(at),
        "firmware_version": fw, "hardware_version": "A", "uptime_s": 10,
        "services": ["mqtt", "telnet"], "remote_access": [],
        "credential": {"state": "default", "changed_at": None},
        "certificates": [{"subject": f"CN={device_id}", "issuer": "CN=ca", "serial": "01",
                          "not_after": "2027-01-01T00:00:00Z"}],
        "config_hash": "0" * 64, "quarantined": False, "applied_commands": 0,
    }
    body.update(over)
    return json.dumps(body).encode()


def status_msg(status: str, at: float = 0) -> bytes:
    return json.dumps({"v": 1, "status": status, "at": _at(at)}).encode()


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes(device(i) for i in range(5)), create_missing=True)
    return city


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _ingest(platform: Platform, messages: list[tuple[str, bytes]], clock: Clock | None = None) -> Ingestor:
    ing = Ingestor(platform.uow, clock=clock or Clock(), max_delay=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(ing.run(stop))
    for topic, payload in messages:
        ing.offer(topic, payload)
    await ing.flush()
    stop.set()
    await task
    return ing


def _states(platform: Platform) -> dict[str, DeviceStateRow]:
    with platform.uow() as uow:
        return {r.device_id: r for r in uow.session.scalars(select(DeviceStateRow))}


def _history(platform: Platform, device_id: str) -> list[tuple[str, Any, Any]]:
    with platform.uow() as uow:
        return [(h.fact, h.old, h.new) for h in uow.session.scalars(
            select(DeviceHistoryRow).where(DeviceHistoryRow.device_id == device_id).order_by(DeviceHistoryRow.id))]


def test_state_is_stored_and_history_records_changes(platform: Platform, fleet: Caller) -> None:
    ing = run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 1)),
                                 ("cityward/v1/SL-00001/status", status_msg("online"))]))
    assert ing.stats.persisted == 2 and not ing.stats.rejected
    s = _states(platform)["SL-00001"]
    assert s.online and s.firmware_version == "1.2.3" and s.credential_state == "default"
    assert s.services == ["mqtt", "telnet"] and s.seq == 1 and s.transport == "mqtt"
    view = inventory.get_device(platform.uow, fleet, "SL-00001")
    assert view.online is True and view.credential_state == "default" and view.last_seen is not None

    # A firmware upgrade and a password change are recorded as history and reach the inventory.
    run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg(
        "SL-00001", 2, fw="2.0.0", at=5, credential={"state": "unique", "changed_at": _at(4)}))]))
    facts = [f for f, _o, _n in _history(platform, "SL-00001")]
    assert facts.count("firmware_version") == 2 and facts.count("credential_state") == 2
    assert ("firmware_version", "1.2.3", "2.0.0") in _history(platform, "SL-00001")
    assert inventory.get_device(platform.uow, fleet, "SL-00001").firmware_version == "2.0.0"


def _running(platform: Platform, device_id: str) -> str | None:
    with platform.uow() as uow:
        return uow.session.scalar(select(DeviceRow.firmware_running).where(DeviceRow.id == device_id))


def test_running_firmware_is_the_reported_one_and_an_import_does_not_override_it(platform: Platform,
                                                                                  fleet: Caller) -> None:
    """Vulnerability matches join devices on `firmware_running`: what the device reports, else
    what the inventory says."""
    assert _running(platform, "SL-00001") == "1.2.3"
    run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 1, fw="9.9.9"))]))
    assert _running(platform, "SL-00001") == "9.9.9"
    rows = [device(i) for i in range(5)]
    rows[2]["firmware_version"] = "7.0.0"  # never reported: the file decides
    import_csv(platform, fleet, csv_bytes(rows))  # SL-00001 still "1.2.3" in the file
    assert inventory.get_device(platform.uow, fleet, "SL-00001").firmware_version == "1.2.3"
    assert _running(platform, "SL-00001") == "9.9.9" and _running(platform, "SL-00002") == "7.0.0"
    run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 2, fw="9.9.10", at=5))]))
    assert _running(platform, "SL-00001") == "9.9.10"


def test_replayed_and_older_states_change_nothing(platform: Platform, fleet: Caller) -> None:
    run(_ingest(platform, [("cityward/v1/SL-00002/state", state_msg("SL-00002", 5, fw="2.0.0", at=10))]))
    before = _states(platform)["SL-00002"].last_seen
    ing = run(_ingest(platform, [
        ("cityward/v1/SL-00002/state", state_msg("SL-00002", 5, fw="9.9.9", at=10)),  # replay of seq 5
        ("cityward/v1/SL-00003/state", state_msg("SL-00003", 1)),
    ]))
    ing2 = run(_ingest(platform, [("cityward/v1/SL-00002/state", state_msg("SL-00002", 4, fw="1.0.0", at=9))]))
    s = _states(platform)["SL-00002"]
    assert s.firmware_version == "2.0.0" and s.seq == 5 and s.last_seen == before
    assert ing.stats.stale == 1 and ing2.stats.stale == 1
    # A new boot starts its sequence again and is accepted.
    run(_ingest(platform, [("cityward/v1/SL-00002/state", state_msg("SL-00002", 0, boot="b2", fw="2.1.0", at=20))]))
    assert _states(platform)["SL-00002"].firmware_version == "2.1.0"


def test_last_will_and_silence_mark_devices_offline(platform: Platform, fleet: Caller) -> None:
    clock = Clock()
    run(_ingest(platform, [(f"cityward/v1/SL-0000{i}/state", state_msg(f"SL-0000{i}", 1)) for i in range(3)],
                clock))
    run(_ingest(platform, [("cityward/v1/SL-00000/status", status_msg("offline", at=30))], clock))
    states = _states(platform)
    assert not states["SL-00000"].online and states["SL-00000"].offline_reason == "will"
    assert states["SL-00001"].online
    # A retained "online" older than the will does not resurrect it.
    run(_ingest(platform, [("cityward/v1/SL-00000/status", status_msg("online", at=0))], clock))
    assert not _states(platform)["SL-00000"].online

    clock.now += timedelta(minutes=20)
    silent = ingestion.sweep_silent(platform.uow, timedelta(minutes=15), clock)
    assert sorted(silent) == ["SL-00001", "SL-00002"]
    assert ingestion.connectivity(platform.uow) == {"online": 0, "offline": 3}
    assert ("online", True, False) in _history(platform, "SL-00001")
    page = inventory.list_devices(platform.uow, fleet, inventory.DeviceFilter(online=False))
    assert {d.id for d in page.items} == {"SL-00000", "SL-00001", "SL-00002"}


def test_bad_messages_are_counted_and_touch_nothing(platform: Platform, fleet: Caller) -> None:
    good = state_msg("SL-00001", 1)
    ing = run(_ingest(platform, [
        ("cityward/v1/SL-00001/state", b"{not json"),
        ("cityward/v1/SL-00001/state", b"[1, 2]"),
        ("cityward/v1/SL-00001/state", state_msg("SL-00001", 1, uptime_s="seven")),
        ("cityward/v1/SL-00001/state", state_msg("SL-00001", 1, v=2)),
        ("cityward/v1/SL-00001/state", state_msg("SL-00002", 1)),  # publishing for another device
        ("cityward/v1/SL-00001/state", good + b" " * 70_000),
        ("cityward/v1/SL-00001/bogus", good),
        ("cityward/v1/SL-99999/state", state_msg("SL-99999", 1)),  # not in the inventory
        ("cityward/v1/SL-00001/result", json.dumps({"v": 1, "device_id": "SL-00001", "command_id": "x",
                                                    "status": "succeeded", "at": _at()}).encode()),
    ]))
    assert ing.stats.rejected == {"malformed": 1, "invalid": 2, "version": 1, "foreign": 1, "oversized": 1,
                                  "bad_topic": 1, "unknown_device": 1, "unknown_command": 1}
    assert _states(platform) == {}


def test_unknown_device_hello_is_discovered_once_and_audited(platform: Platform, fleet: Caller) -> None:
    hello = json.dumps({"v": 1, "device_id": "CAM-77", "kind": "camera", "brand": "Quarrow", "model": "QC-410",
                        "firmware_version": "V5.5.0 build 170725", "serial": "Q1", "mac": "02:aa:00:00:00:01",
                        "at": _at()}).encode()
    run(_ingest(platform, [("cityward/v1/CAM-77/hello", hello), ("cityward/v1/CAM-77/hello", hello)]))
    ing = run(_ingest(platform, [("cityward/v1/CAM-77/hello", hello)]))
    assert ing.stats.discovered == 0
    with platform.uow() as uow:
        row = uow.session.get(DiscoveredDeviceRow, "CAM-77")
        assert row is not None and row.status == "pending" and row.announcements == 2
        assert row.hello["model"] == "QC-410"
        events = uow.session.scalars(select(AuditEventRow).where(AuditEventRow.action == "discovery.announced"))
        assert [e.target_id for e in events] == ["CAM-77"]
        assert uow.session.get(DeviceRow, "CAM-77") is None  # not in the inventory until approved


def test_many_devices_in_one_batch(platform: Platform, city: Caller) -> None:
    zones.create_zone(platform.uow, city, "downtown", "high")
    import_csv(platform, city, csv_bytes(device(i) for i in range(1500)), create_missing=True)
    msgs = [(f"cityward/v1/SL-{i:05d}/state", state_msg(f"SL-{i:05d}", s)) for s in (1, 2) for i in range(1500)]
    ing = run(_ingest(platform, msgs))
    assert ing.stats.persisted + ing.stats.superseded == 3000
    assert len(_states(platform)) == 1500 and all(s.seq == 2 for s in _states(platform).values())
    assert organizations.is_initialized(platform.uow)


def test_control_characters_and_non_utc_times_are_refused(platform: Platform, fleet: Caller) -> None:
    ing = run(_ingest(platform, [
        ("cityward/v1/SL-00001/state", state_msg("SL-00001", 1, fw="1.0\u0000")),
        ("cityward/v1/SL-00001/state", state_msg("SL-00001", 1).replace(b"Z\"", b"+02:00\"", 1)),
    ]))
    assert ing.stats.rejected == {"invalid": 2} and _states(platform) == {}


def test_a_failing_batch_is_counted_and_ingestion_goes_on(platform: Platform, fleet: Caller,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = states_store.write_batch
    calls = {"n": 0}

    def flaky(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(states_store, "write_batch", flaky)

    async def go() -> Ingestor:
        ing = Ingestor(platform.uow, clock=Clock(), max_delay=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(ing.run(stop))
        ing.offer("cityward/v1/SL-00001/state", state_msg("SL-00001", 1))
        await ing.flush()
        ing.offer("cityward/v1/SL-00002/state", state_msg("SL-00002", 1))
        await ing.flush()
        stop.set()
        await task
        return ing

    ing = run(go())
    assert ing.stats.dropped == {"write_failed": 1} and set(_states(platform)) == {"SL-00002"}


def test_an_answered_http_poll_is_a_sign_of_life(platform: Platform, fleet: Caller) -> None:
    from cityward.domain import telemetry

    async def poll(clock: Clock) -> None:
        ing = Ingestor(platform.uow, clock=clock, max_delay=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(ing.run(stop))
        msg = telemetry.decode("cityward/v1/SL-00003/state", state_msg("SL-00003", 7))
        assert isinstance(msg, telemetry.Message)
        ing.offer_message(msg, transport="http")
        await ing.flush()
        stop.set()
        await task

    clock = Clock()
    run(poll(clock))
    first = _states(platform)["SL-00003"].last_seen
    clock.now += timedelta(minutes=5)
    run(poll(clock))  # the same seq again: facts unchanged, but the device answered
    assert _states(platform)["SL-00003"].last_seen > first


def test_a_state_from_the_future_is_refused_and_genuine_states_go_on(platform: Platform, fleet: Caller) -> None:
    """A state dated a day ahead with a new boot would outrank every genuine state until that day
    (and rewrite the inventory's firmware); past the accepted skew it is refused and counted."""
    run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 1, fw="1.2.3"))]))
    skew = telemetry.MAX_CLOCK_SKEW.total_seconds()
    ing = run(_ingest(platform, [
        ("cityward/v1/SL-00001/state", state_msg("SL-00001", 0, boot="evil", fw="6.6.6", at=86_400)),
        ("cityward/v1/SL-00002/status", status_msg("online", at=skew + 60)),
    ]))
    assert ing.stats.rejected == {"future": 2} and ing.stats.persisted == 0
    assert _running(platform, "SL-00001") == "1.2.3"
    # Within the bound, a fast clock is accepted; the device's genuine states keep arriving.
    ing = run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 2, at=skew - 5))]))
    assert ing.stats.persisted == 1 and _states(platform)["SL-00001"].seq == 2


def test_a_future_state_stored_earlier_does_not_freeze_the_device(platform: Platform, fleet: Caller) -> None:
    """A future-dated state stored before the bound existed: the next genuine boot supersedes it."""
    run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 1))]))
    with platform.uow(write=True) as uow:
        row = uow.session.get(DeviceStateRow, "SL-00001")
        assert row is not None
        row.reported_at, row.boot_id = T0 + timedelta(days=30), "evil"
        uow.commit()
    run(_ingest(platform, [("cityward/v1/SL-00001/state", state_msg("SL-00001", 0, boot="b2", fw="2.0.0", at=3))]))
    assert _states(platform)["SL-00001"].boot_id == "b2" and _running(platform, "SL-00001") == "2.0.0"


@given(stored=st.datetimes(timezones=st.just(UTC)), at=st.datetimes(timezones=st.just(UTC)),
       now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_boot_order_never_trusts_a_stored_time_beyond_the_skew(stored: datetime, at: datetime,
                                                               now: datetime) -> None:
    newer = telemetry.is_newer("b1", 7, stored, "b2", 0, at, now)
    if telemetry.ahead_of(stored, now):
        assert newer
    else:
        assert newer == (at >= stored)
    assert telemetry.is_newer("b1", 7, stored, "b1", 8, at, now) and not telemetry.is_newer(
        "b1", 7, stored, "b1", 7, at, now)


def _hello(device_id: str, **over: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "device_id": device_id, "kind": "streetlight", "brand": "Lumo", "model": "L100",
                            "firmware_version": "1.2.3", "serial": "S1", "mac": "02:00:00:00:00:01", "at": _at()}
    return json.dumps({**body, **over}).encode()


def test_a_known_device_announcing_another_identity_is_recorded(platform: Platform, fleet: Caller) -> None:
    """Another serial, MAC or brand under a known id (swapped hardware, a clone) is an audited
    mismatch and an `identity` history fact, once per new announcement; case and MAC separators
    are not differences."""
    topic = "cityward/v1/SL-00001/hello"
    ing = run(_ingest(platform, [(topic, _hello("SL-00001", brand="LUMO", mac="02-00-00-00-00-01"))]))
    assert ing.stats.identity_changes == 0
    ing = run(_ingest(platform, [(topic, _hello("SL-00001", serial="EVIL-1", mac="02:00:00:00:99:99"))]))
    assert ing.stats.identity_changes == 1
    again = run(_ingest(platform, [(topic, _hello("SL-00001", serial="EVIL-1", mac="02:00:00:00:99:99"))]))
    assert again.stats.identity_changes == 0  # said on every connect: recorded once
    assert _history(platform, "SL-00001") == [
        ("identity", {"serial": "S1", "mac": "02:00:00:00:00:01"}, {"serial": "EVIL-1", "mac": "02:00:00:00:99:99"})]
    with platform.uow() as uow:
        events = [(e.action, e.target_id, e.before, e.after) for e in uow.session.scalars(
            select(AuditEventRow).where(AuditEventRow.action == "device.identity_mismatch"))]
    assert events == [("device.identity_mismatch", "SL-00001", {"serial": "S1", "mac": "02:00:00:00:00:01"},
                       {"serial": "EVIL-1", "mac": "02:00:00:00:99:99"})]
    ing = run(_ingest(platform, [(topic, _hello("SL-00001", brand="Vexlumen"))]))
    assert ing.stats.identity_changes == 1
    with platform.uow() as uow:  # never discovered as a new device
        assert uow.session.get(DiscoveredDeviceRow, "SL-00001") is None


def _identity_findings(platform: Platform, caller: Caller) -> set[str]:
    text = baseline_path().read_bytes()
    report = audit.run_audit(platform.uow, caller, parse_policy(text, "baseline.yaml"), text)
    return {f.device_id for f in report.finding_list() if f.rule_id == "ORIG-003"}


def test_an_identity_mismatch_is_a_finding_until_resolved(platform: Platform, fleet: Caller) -> None:
    """Rule ORIG-003 fails a device whose last announcement still differs from the inventory; the
    device announcing the inventory's identity again, or the inventory corrected, clears it."""
    topic = "cityward/v1/SL-00001/hello"
    run(_ingest(platform, [(topic, _hello("SL-00001", serial="EVIL-1")),
                           ("cityward/v1/SL-00002/hello", _hello("SL-00002", serial="S2", mac="02:00:00:00:00:02"))]))
    assert _identity_findings(platform, fleet) == {"SL-00001"}
    run(_ingest(platform, [(topic, _hello("SL-00001"))]))  # the original hardware is back
    assert _history(platform, "SL-00001")[-1] == ("identity", {"serial": "EVIL-1"}, {})
    assert _identity_findings(platform, fleet) == set()
    run(_ingest(platform, [(topic, _hello("SL-00001", serial="NEW-7"))]))
    assert _identity_findings(platform, fleet) == {"SL-00001"}
    with platform.uow(write=True) as uow:  # a person checks the label and corrects the inventory
        row = uow.session.get(DeviceRow, "SL-00001")
        assert row is not None
        row.serial = "NEW-7"
        uow.commit()
    assert _identity_findings(platform, fleet) == set()
