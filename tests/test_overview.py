"""The overview's counts (one pass of filtered aggregates) against a plain count in Python, the
snapshots that keep them, and the partners' policy acknowledgements."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from cityward.adapters.storage.models import DeviceStateRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.errors import Conflict
from cityward.services import organizations, overview, policies, zones
from cityward.services.snapshots import Snapshots
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("seed", [1, 2])
def test_live_and_fleet_counts_agree_with_counting_each_device(platform: Platform, city: Caller, seed: int) -> None:
    rnd = random.Random(seed)
    zones.create_zone(platform.uow, city, "harbour")
    rows = [device(i, kind=rnd.choice(["streetlight", "camera", "waste_bin"]), zone=rnd.choice(["downtown", "harbour"]))
            for i in range(60)]
    import_csv(platform, city, csv_bytes(rows), create_missing=True)
    states = []
    for r in rows:
        if rnd.random() < 0.25:
            continue  # never reported
        states.append(DeviceStateRow(
            device_id=r["id"], online=rnd.random() < 0.6, offline_reason=rnd.choice([None, "will", "silence"]),
            status_at=NOW, last_seen=NOW, transport="mqtt",
            services=rnd.choice([None, [], ["telnet"], ["ftp", "upnp"], ["mqtt", "telnet", "upnp"]]),
            remote_access=rnd.choice([None, [], ["vpn"]]), credential_state=rnd.choice(["default", "unique"]),
            cert_expires_at=rnd.choice([None, NOW - timedelta(days=1), NOW + timedelta(days=10),
                                        NOW + timedelta(days=90)]),
            quarantined=rnd.random() < 0.1))
    with platform.uow(write=True) as uow:
        uow.session.add_all(states)
        uow.commit()

    live = overview.live_overview(platform.uow, city, now=NOW)
    online = [s for s in states if s.online]
    assert (live.reporting, live.online, live.offline, live.never_reported) == (
        len(states), len(online), len(states) - len(online), len(rows) - len(states))
    for name, n in live.insecure_services:
        assert n == sum(1 for s in states if name in (s.services or [])), name
    assert live.remote_access == sum(1 for s in states if s.remote_access)
    assert live.cert_expired == sum(1 for s in states if s.cert_expires_at and s.cert_expires_at < NOW)
    assert live.cert_expiring_30d == sum(1 for s in states if s.cert_expires_at
                                         and NOW <= s.cert_expires_at < NOW + timedelta(days=30))
    assert live.quarantined == sum(1 for s in states if s.quarantined)
    assert dict(live.credential_states) == {
        k: sum(1 for s in states if s.credential_state == k) for k in {s.credential_state for s in states}}

    fleet = overview.fleet_overview(platform.uow, city, today=date(2026, 11, 26))
    assert fleet.devices == 60
    assert dict(fleet.by_kind) == {k: sum(1 for r in rows if r["kind"] == k) for k in {r["kind"] for r in rows}}
    assert dict(fleet.by_zone) == {z: sum(1 for r in rows if r["zone"] == z) for z in {r["zone"] for r in rows}}


def test_a_partner_counts_only_the_devices_it_maintains(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Acme Integrators", "integrator")
    import_csv(platform, city, csv_bytes([device(i, maintainer="Acme Integrators" if i < 4 else "")
                                          for i in range(10)]), create_missing=True)
    acme = caller_for(platform, "Acme Integrators")
    assert overview.posture(platform.uow, acme).fleet.devices == 4
    assert overview.posture(platform.uow, city).fleet.devices == 10
    assert overview.posture_key(acme) != overview.posture_key(city)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_snapshot_is_served_fresh_then_stale_while_it_is_recounted_in_the_background() -> None:
    clock, counted = Clock(), []

    def count() -> int:
        counted.append(1)
        return len(counted)

    snaps = Snapshots[int](fresh_s=30, stale_limit_s=600, clock=clock)
    assert snaps.get("city", count).value == 1
    clock.t += 29
    assert snaps.get("city", count).value == 1 and len(counted) == 1  # fresh: not recounted
    clock.t += 2
    assert snaps.get("city", count).value == 1  # stale: served at once ...
    snaps.settle()
    assert len(counted) == 2 and snaps.get("city", count).value == 2  # ... and recounted behind it
    assert snaps.get("partner", count).value == 3  # another scope: its own count
    clock.t += 601
    assert snaps.get("city", count).value == 4  # too old to show: counted while the viewer waits


def test_a_failed_recount_keeps_the_older_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    snaps = Snapshots[str](fresh_s=1, clock=clock)
    snaps.get("k", lambda: "first")
    clock.t += 5

    def broken() -> str:
        raise RuntimeError("database went away")

    assert snaps.get("k", broken).value == "first"
    snaps.settle()
    assert snaps.get("k", broken).value == "first"
    snaps.settle()
    assert "database went away" in caplog.text


@pytest.mark.parametrize("fresh_s", [30.0, 0.0])  # 0: a count is stale the moment it is done
def test_concurrent_first_viewers_share_one_count(fresh_s: float) -> None:
    calls = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 7

    snaps = Snapshots[int](fresh_s=fresh_s)
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(snaps.get("k", slow).value)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snaps.settle()
    assert got == [7] * 5 and len(calls) == 1


def test_snapshots_keep_at_most_max_keys_dropping_the_oldest() -> None:
    clock = Clock()
    snaps = Snapshots[str](max_keys=2, clock=clock)
    for key in ("a", "b", "c"):
        clock.t += 1
        snaps.get(key, lambda k=key: k)  # type: ignore[misc]
    recounted = []
    snaps.get("a", lambda: recounted.append(1) or "a")  # type: ignore[func-returns-value]
    assert recounted == [1]  # "a" was dropped, so it is counted again


def test_acknowledgement_status_lists_pending_partners_first(platform: Platform, city: Caller) -> None:
    assert policies.acknowledgement_status(platform.uow, city) is None  # nothing published yet
    for name in ("Acme Integrators", "Bolt Installers"):
        organizations.create_org(platform.uow, city, name, "integrator" if name[0] == "A" else "installer")
    policies.publish(platform.uow, city, policies.baseline_path().read_bytes(), "baseline.yaml")
    bolt = caller_for(platform, "Bolt Installers")
    policies.acknowledge(platform.uow, bolt)
    status = policies.acknowledgement_status(platform.uow, city)
    assert status is not None and status.version == 1 and status.pending == 1
    assert [(p.org, p.acked_at is not None) for p in status.partners] == [
        ("Acme Integrators", False), ("Bolt Installers", True)]
    own = policies.acknowledgement_status(platform.uow, bolt)
    assert own is not None and [p.org for p in own.partners] == ["Bolt Installers"]
    with pytest.raises(Conflict):
        policies.acknowledge(platform.uow, bolt)


def test_the_failing_rule_filter_reads_the_callers_latest_audit(platform: Platform, city: Caller) -> None:
    from cityward.domain.policy.document import parse_policy
    from cityward.errors import NotFound, PreconditionFailed
    from cityward.services import audit, inventory

    import_csv(platform, city, csv_bytes(device(i) for i in range(6)), create_missing=True)
    flt = inventory.DeviceFilter(failing_rule="CRED-001")
    with pytest.raises(PreconditionFailed, match="no audit"):
        inventory.list_devices(platform.uow, city, flt)
    with platform.uow(write=True) as uow:  # two devices report their factory password
        uow.session.add_all(DeviceStateRow(device_id=d, online=True, status_at=NOW, last_seen=NOW, transport="mqtt",
                                           credential_state="default") for d in ("SL-00001", "SL-00004"))
        uow.commit()
    text = policies.baseline_path().read_bytes()
    audit.run_audit(platform.uow, city, parse_policy(text, "baseline.yaml"), text)
    found = inventory.list_devices(platform.uow, city, flt)
    assert [d.id for d in found.items] == ["SL-00001", "SL-00004"] and found.total == 2
    with pytest.raises(NotFound, match="no rule 'CRED-999'"):  # not an empty list: the id is wrong
        inventory.list_devices(platform.uow, city, inventory.DeviceFilter(failing_rule="CRED-999"))
    capped = inventory.list_devices(platform.uow, city, inventory.DeviceFilter(), limit=2, count_up_to=3)
    assert (capped.total, capped.total_is_floor) == (3, True)
    exact = inventory.list_devices(platform.uow, city, inventory.DeviceFilter(), limit=2, count_up_to=6)
    assert (exact.total, exact.total_is_floor) == (6, False)
