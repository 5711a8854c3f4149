"""Attempt timeouts follow the operation and the product (the catalog's `upgrade_minutes`), and a
device's late success corrects an action recorded failed, on both backends."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from cityward.adapters.inventory_files import FileFormat
from cityward.adapters.storage.models import DeviceRow, RolloutActionRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import EXPECTED_SECONDS, Operation, WaveOptions, expected_seconds, follow_limit
from cityward.errors import InvalidInput
from cityward.services import auditlog, catalog, credentials, firmware, rollouts
from cityward.services.rollout_executor import (
    LOST,
    LateResult,
    correct_from_reported_firmware,
    correct_late_results,
)
from cityward.services.rollouts import RolloutRequest, Target
from tests.helpers import csv_bytes, device, import_csv
from tests.rollout_support import offline_executor
from tests.test_cli import Cli
from tests.test_rollouts import HEADER, KEY, _pub, _sign

CATALOG_HEADER = ["brand", "model", "origin_brand", "origin_model", "upgrade_minutes"]


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    catalog.import_catalog(platform.uow, city, io.BytesIO(csv_bytes([
        {"brand": "Lumo", "model": "L100", "origin_brand": "Lumo", "origin_model": "L100", "upgrade_minutes": "9"},
        {"brand": "Brite", "model": "B1", "origin_brand": "Lumo", "origin_model": "L100"},  # a relabel
    ], CATALOG_HEADER)), "catalog.csv", FileFormat.CSV)
    rows = [device(i, protocol="mqtt") for i in range(1, 4)]
    rows += [device(4, brand="Brite", model="B1", protocol="mqtt")]
    import_csv(platform, city, csv_bytes(rows, HEADER), create_missing=True)
    return city


def _start(platform: Platform, caller: Caller, op: Operation, store: Path, options: WaveOptions,
           **extra: object) -> int:
    rid, _plan = rollouts.create(platform.uow, caller, RolloutRequest(
        "t", op, Target(device_ids=("SL-00001", "SL-00002", "SL-00003", "SL-00004")), options,
        **extra), store)  # type: ignore[arg-type]
    rollouts.start(platform.uow, caller, rid)
    return rid


def test_the_catalog_declares_upgrade_minutes_and_refuses_bad_ones(platform: Platform, fleet: Caller) -> None:
    found = {(p.brand, p.model): p.upgrade_minutes for p in catalog.list_products(platform.uow, fleet)}
    assert found == {("Lumo", "L100"): 9.0, ("Brite", "B1"): None}
    data = json.dumps([{"brand": "Lumo", "model": "L100", "upgrade_minutes": 12.5}]).encode()
    catalog.import_catalog(platform.uow, fleet, io.BytesIO(data), "catalog.json", FileFormat.JSON)
    assert catalog.get_product(platform.uow, fleet, ("Lumo", "L100")).upgrade_minutes == 12.5
    events = auditlog.list_events(platform.uow, fleet, action="products.updated")
    assert events[0].before["upgrade_minutes"] == 9.0 and events[0].after["upgrade_minutes"] == 12.5
    for bad, message in (("soon", "is not a number of minutes"), ("0", "more than 0"), ("-3", "more than 0"),
                         ("1441", "at most 1440"), ("nan", "more than 0"), ("inf", "more than 0")):
        with pytest.raises(InvalidInput) as info:
            catalog.import_catalog(platform.uow, fleet, io.BytesIO(csv_bytes([
                {"brand": "Lumo", "model": "L100", "upgrade_minutes": "2"},
                {"brand": "Lumo", "model": "L200", "upgrade_minutes": bad}], CATALOG_HEADER)),
                "catalog.csv", FileFormat.CSV)
        problem = info.value.problems[0]
        assert (problem.row, problem.field) == (3, "upgrade_minutes") and message in problem.message, problem
    assert catalog.get_product(platform.uow, fleet, ("Lumo", "L100")).upgrade_minutes == 12.5  # nothing imported


def test_attempt_timeouts_follow_the_operation_and_the_product(platform: Platform, fleet: Caller,
                                                               tmp_path: Path) -> None:
    store = tmp_path / "fw"
    firmware.register_key(platform.uow, fleet, "Lumo", "lumo-1", _pub(KEY))
    image = b"image v2 " * 100
    release = firmware.add_release(platform.uow, fleet, store, brand="Lumo", model="L100", version="2.0.0",
                                   image=image, signature=_sign(KEY, "Lumo", "L100", "2.0.0", image),
                                   key_id="lumo-1")
    every = WaveOptions(canary=0, percentages=(100,), concurrency=10)
    assert every.timeout_s is None and every.problems() == []
    upgrade = _start(platform, fleet, Operation.UPGRADE_FIRMWARE, store, every, release=release.id)
    executor = offline_executor(platform, store)
    before = datetime.now(UTC)
    claimed, _busy = executor.claim_all()
    by_device = {d.device_id: d for d in executor.build_many(claimed)}
    # 9 minutes declared for Lumo L100, inherited by its relabel Brite B1.
    assert {d: (x.timeout, x.expected) for d, x in by_device.items()} == {
        f"SL-{i:05d}": (540.0, 540.0) for i in range(1, 5)}
    with platform.uow() as uow:
        leases = uow.session.scalars(select(RolloutActionRow.lease_until).where(
            RolloutActionRow.rollout_id == upgrade)).all()
    # The claim covers the operation's default (15 min) plus the last ask and the grace.
    assert all(lease is not None and lease.replace(tzinfo=UTC) >= before + timedelta(seconds=900 + 35 - 1)
               for lease in leases)
    # Two upgrades recorded undone whose devices then report the release's version (over HTTP a
    # late result is not pushed): corrected from the reported firmware; a third one is not on it.
    executor._finish(by_device["SL-00001"], LOST, "timeout: took command … but silent")
    executor._finish(by_device["SL-00002"], "failed", "timeout: no answer")  # pending: a retry is due
    executor._finish(by_device["SL-00003"], LOST, "timeout: took command … but silent")
    executor._finish(by_device["SL-00004"], "succeeded", None)
    assert correct_from_reported_firmware(platform.uow) == 0
    with platform.uow(write=True) as uow:
        uow.session.execute(update(DeviceRow).where(DeviceRow.id.in_(["SL-00001", "SL-00002"]))
                            .values(firmware_running="2.0.0"))
        uow.commit()
    assert correct_from_reported_firmware(platform.uow) == 2
    assert {a.device_id: a.status for a in rollouts.actions(platform.uow, fleet, upgrade)} == {
        "SL-00001": "succeeded", "SL-00002": "succeeded", "SL-00003": "failed", "SL-00004": "succeeded"}
    events = auditlog.list_events(platform.uow, fleet, action="rollout.action_corrected")
    assert sorted((e.target_id, e.before["status"]) for e in events) == [("SL-00001", "failed"),
                                                                         ("SL-00002", "pending")]
    assert correct_from_reported_firmware(platform.uow) == 0

    reboot = _start(platform, fleet, Operation.REBOOT, store, WaveOptions(canary=0, percentages=(100,),
                                                                          concurrency=10, timeout_s=30))
    claimed, _busy = executor.claim_all()
    dispatches = [d for d in executor.build_many(claimed) if d.rollout_id == reboot]
    assert {(d.timeout, d.expected) for d in dispatches} == {(30.0, EXPECTED_SECONDS[Operation.REBOOT])}
    assert expected_seconds(Operation.UPGRADE_FIRMWARE) == 900 and expected_seconds(Operation.REBOOT) == 120
    assert expected_seconds(Operation.ROTATE_PASSWORD) <= 60 and expected_seconds(Operation.SET_CONFIG) <= 60
    assert follow_limit(30, 120) == 1200 and follow_limit(30, 86_400) == 86_400


def test_a_late_success_corrects_a_failed_record(platform: Platform, fleet: Caller, tmp_path: Path) -> None:
    rid = _start(platform, fleet, Operation.ROTATE_PASSWORD, tmp_path,
                 WaveOptions(canary=0, percentages=(100,), concurrency=10, retries=1, failure_threshold=100,
                             success_threshold=0))
    executor = offline_executor(platform, tmp_path)
    claimed, _busy = executor.claim_all()
    d1, d2, d3, d4 = sorted(executor.build_many(claimed), key=lambda d: d.device_id)
    # Took the command and fell silent: failed at once, retries left or not, nothing sent anew.
    executor._finish(d1, LOST, "timeout: took command … but silent")
    # Never answered at all: retried under a new id (its command has expired).
    executor._finish(d2, "failed", "timeout: no answer")
    executor._finish(d3, "failed", "install failed")
    executor._finish(d4, "succeeded", None)
    statuses = {a.device_id: a.status for a in rollouts.actions(platform.uow, fleet, rid)}
    assert statuses == {"SL-00001": "failed", "SL-00002": "pending", "SL-00003": "pending", "SL-00004": "succeeded"}
    assert rollouts.get(platform.uow, fleet, rid).counts["failed"] == 1

    late = [LateResult("SL-00001", d1.command_id, "done"),  # the lost one finished after all
            LateResult("SL-00002", d2.command_id),  # the silent one too, before its retry went out
            LateResult("SL-00003", d3.command_id + "-0"),  # not a command of this action
            LateResult("SL-00004", d4.command_id),  # already succeeded: nothing to correct
            LateResult("SL-00009", d1.command_id)]  # another device's claim on that command id
    assert correct_late_results(platform.uow, executor.box, late) == 2
    statuses = {a.device_id: a.status for a in rollouts.actions(platform.uow, fleet, rid)}
    assert statuses == {"SL-00001": "succeeded", "SL-00002": "succeeded", "SL-00003": "pending",
                        "SL-00004": "succeeded"}
    view = rollouts.get(platform.uow, fleet, rid)
    assert view.counts.get("failed", 0) == 0 and view.counts["succeeded"] == 3
    events = auditlog.list_events(platform.uow, fleet, action="rollout.action_corrected")
    assert sorted(e.target_id for e in events) == ["SL-00001", "SL-00002"]
    assert {e.before["status"] for e in events} == {"failed", "pending"}
    # The lost attempt's new password is the device's now: it was kept for this.
    assert credentials.load_secrets(platform.uow, executor.box, credentials.ADMIN, ["SL-00001"]) == {
        "SL-00001": d1.secret}
    assert correct_late_results(platform.uow, executor.box, late) == 0  # repeated: nothing more


def test_the_cli_shows_and_sets_upgrade_minutes(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("init", "--city", "Springfield")
    (tmp_path / "catalog.csv").write_bytes(csv_bytes([
        {"brand": "Lumo", "model": "L100", "origin_brand": "Lumo", "origin_model": "L100", "upgrade_minutes": "9"}],
        CATALOG_HEADER))
    cli("products", "import", "catalog.csv")
    assert "upgrade min" in cli("products", "list").stdout
    cli("products", "set", "Lumo", "L100", "--upgrade-minutes", "2.5")
    listed = json.loads(cli("products", "list", "--json").stdout)
    assert [(p["brand"], p["upgrade_minutes"]) for p in listed] == [("Lumo", 2.5)]
    assert "2.5" in cli("products", "show", "Lumo", "L100").stdout
    refused = cli("products", "set", "Lumo", "L100", "--upgrade-minutes", "0", code=2)
    assert "upgrade_minutes" in refused.stderr + refused.stdout and "more than 0" in refused.stderr + refused.stdout
