"""The rollout state machine, driven by hypothesis over the real services and executor on both
backends: random sequences of create, approve, start, pause, resume, abort, executor ticks,
device results (including late and repeated ones) and executor crashes with a restart after the
leases ran out. After every step the invariants hold:

- a command is accepted exactly when the state allows it (the table below, written from
  docs/rollouts.md, not from the code); a refused one names the state and changes nothing, not
  even the audit log;
- a finished rollout (succeeded, finished with failures, aborted) never changes again;
- the derived status agrees with the per-device counts, and the counts with the waves' sizes;
- no device action is decided twice, and a device is never sent a second command id for an
  action while its first one is undecided (so no device applies a rollout action twice).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import AuditEventRow, RolloutActionRow, RolloutRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import FailureAction, Operation, RolloutStateConflict, WaveOptions
from cityward.services import rollouts, zones
from cityward.services.rollout_executor import REASK_TIMEOUT, Dispatch, Executor, ExecutorOptions
from cityward.services.rollouts import RolloutRequest, RolloutView, Target
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv

HEADER = ["id", "kind", "brand", "model", "firmware_version", "zone", "protocol", "serial", "mac"]
# What each state accepts (docs/rollouts.md, "Progress and control"); every other command is refused.
ACCEPTS = {"awaiting_approval": {"approve", "abort"}, "ready": {"start", "abort"},
           "running": {"pause", "abort"}, "paused": {"resume", "abort"}}
AFTER = {"approve": {"ready"}, "start": {"running"}, "pause": {"paused"}, "resume": {"running"},
         "abort": {"aborted", "aborting"}}
FINAL = {"succeeded", "finished with failures", "aborted"}
TIMEOUT_S = 60.0
LEASE_S = TIMEOUT_S + REASK_TIMEOUT + 30.0  # the executor's default grace


class RolloutMachine(RuleBasedStateMachine):
    platform: Platform
    city: Caller
    approver: Caller
    store: Path
    numbers: itertools.count[int]
    clock: list[float]  # seconds added to the real time: a crash lets the leases run out
    steps: Counter[str]

    rollouts = Bundle("rollouts")

    def __init__(self) -> None:
        super().__init__()
        self.executor = self._executor()
        self.ids: list[int] = []
        self.final: dict[int, tuple[str, dict[str, int]]] = {}
        self.out: list[Dispatch] = []  # every command a device received; any may still be answered
        self.current: dict[int, str] = {}  # action -> the command id it was last sent
        self.undecided: set[str] = set()  # command ids sent and not yet decided
        self.decided: set[int] = set()  # actions with their final result

    def _executor(self) -> Executor:
        key = self.platform.settings.secret_key_bytes()
        return Executor(self.platform.uow, SecretBox(key), key, ExecutorOptions(
            mqtt_url=None, firmware_store=self.store, name=f"exec-{next(self.numbers)}"))

    def _view(self, rid: int) -> RolloutView:
        return rollouts.get(self.platform.uow, self.city, rid)

    def _events(self) -> int:
        with self.platform.uow() as uow:
            return uow.session.scalar(select(func.count()).select_from(AuditEventRow)) or 0

    def _action(self, action_id: int) -> tuple[str, str | None]:
        with self.platform.uow() as uow:
            row = uow.session.get(RolloutActionRow, action_id)
            assert row is not None
            return row.status, row.command_id

    # --- commands --------------------------------------------------------------------------------

    @initialize(target=rollouts, devices=st.integers(1, 5), critical=st.sampled_from([False, False, True]),
                retries=st.integers(0, 1), on_failure=st.sampled_from(FailureAction),
                failure_threshold=st.sampled_from([0, 50, 100]), canary=st.integers(0, 2))
    def first(self, devices: int, critical: bool, retries: int, on_failure: FailureAction,
              failure_threshold: int, canary: int) -> int:
        return self.create(devices, critical, retries, on_failure, failure_threshold, canary)

    # A few rollouts per sequence, so the commands and results meet each of them in many states.
    @precondition(lambda self: len(self.ids) < 3)
    @rule(target=rollouts, devices=st.integers(1, 5), critical=st.booleans(), retries=st.integers(0, 1),
          on_failure=st.sampled_from(FailureAction), failure_threshold=st.sampled_from([0, 50, 100]),
          canary=st.integers(0, 2))
    def create(self, devices: int, critical: bool, retries: int, on_failure: FailureAction,
               failure_threshold: int, canary: int) -> int:
        """Fresh devices each time: one rollout per device at a time is tested elsewhere."""
        numbers = [next(self.numbers) for _ in range(devices)]
        rows = [device(n, id=f"SM-{n:05d}", zone="hospital" if critical else "north", protocol="mqtt")
                for n in numbers]
        import_csv(self.platform, self.city, csv_bytes(rows, HEADER))
        options = WaveOptions(canary=canary, percentages=(50, 100), concurrency=2, timeout_s=TIMEOUT_S,
                              retries=retries, success_threshold=50, failure_threshold=failure_threshold,
                              on_failure=on_failure)
        rid, plan = rollouts.create(self.platform.uow, self.city, RolloutRequest(
            f"machine {numbers[0]}", Operation.REBOOT, Target(device_ids=tuple(r["id"] for r in rows)),
            options), self.store)
        assert plan.devices == devices and plan.needs_approval == critical
        self.ids.append(rid)
        self.steps["create"] += 1
        return rid

    def _command(self, rid: int, command: str) -> None:
        before, events = self._view(rid), self._events()
        accepted = command in ACCEPTS.get(before.status, set())
        uow = self.platform.uow
        try:
            if command == "approve":
                rollouts.approve(uow, self.approver, rid)
            else:
                getattr(rollouts, command)(uow, self.city, rid)
        except RolloutStateConflict as exc:
            assert not accepted, f"{command} refused from {before.status}: {exc}"
            assert (exc.state.value, exc.command.value) == (before.status, command)
            assert f"is {before.status}" in exc.message
            assert self._view(rid) == before and self._events() == events, "a refusal changed something"
            self.steps[f"{command} refused"] += 1
            return
        assert accepted, f"{command} accepted from {before.status}"
        assert self._view(rid).status in AFTER[command]
        assert self._events() == events + 1, "an accepted command is audited once"
        self.steps[f"{command} accepted"] += 1

    @rule(rid=rollouts, command=st.sampled_from(["start", "resume", "pause", "approve", "abort"]),
          steer=st.sampled_from([True, False, True]))
    def operate(self, rid: int, command: str, steer: bool) -> None:
        """Any command; steered, the one that moves the rollout on (approve, start, resume) where
        the state allows it, so sequences get going before an abort ends them."""
        if steer:
            allowed = sorted(ACCEPTS.get(self._view(rid).status, set()) - {"abort", "pause"})
            command = allowed[0] if allowed else command
        self._command(rid, command)

    # --- the executor and the devices -------------------------------------------------------------------

    # One rule for everything the executor and the devices do (hypothesis's swarm testing switches
    # whole rules off per sequence; this way a sequence keeps them together), weighted towards
    # results. What cannot happen yet (no command out) is a tick instead.
    @rule(kind=st.sampled_from(["result", "tick", "result", "crash", "tick", "result", "late result"]),
          pick=st.integers(0, 10_000), status=st.sampled_from(["succeeded", "succeeded", "failed"]))
    def work(self, kind: str, pick: int, status: str) -> None:
        if kind == "crash" and self.undecided:
            self.crash()
        elif kind.endswith("result") and self.out:
            self.device_result(pick, status, late=kind == "late result")
        else:
            self.tick()

    def tick(self) -> None:
        """The executor advances waves and claims work; the claimed commands go out."""
        claimed, _busy = self.executor.claim_all()
        for d in self.executor.build_many(claimed):
            previous = self.current.get(d.action_id)
            if previous is not None and previous != d.command_id:
                # A new id (a retry) only once the previous attempt was decided.
                assert previous not in self.undecided, f"{d.device_id}: {d.command_id} while {previous} is out"
            self.current[d.action_id] = d.command_id
            self.undecided.add(d.command_id)
            self.out.append(d)
        self.steps["tick"] += 1

    def device_result(self, pick: int, status: str, late: bool) -> None:
        """A device answers one command it received: one still out, or (late) any, again or
        after its action was decided or re-sent."""
        waiting = [d for d in self.out if d.command_id in self.undecided]
        pool = self.out if late or not waiting else waiting
        d = pool[pick % len(pool)]
        before = self._action(d.action_id)
        self.executor._finish(d, status, None if status == "succeeded" else "timeout: no answer")
        after = self._action(d.action_id)
        if before == ("running", d.command_id):
            self.undecided.discard(d.command_id)
            assert after[0] != "running"
            assert after[0] == "succeeded" if status == "succeeded" else after[0] in ("pending", "failed")
            if after[0] in ("succeeded", "failed"):
                assert d.action_id not in self.decided, f"{d.device_id} decided twice"
                self.decided.add(d.action_id)
            self.steps["result taken"] += 1
        else:
            assert after == before, f"a result for {d.command_id} changed {before} to {after}"
            self.steps["result ignored"] += 1

    def crash(self) -> None:
        """The executor dies with commands out; another starts once their leases have run out."""
        self.executor = self._executor()
        self.clock[0] += LEASE_S + 1
        self.steps["crash"] += 1

    def teardown(self) -> None:
        """Examples share one database: close this one's rollouts so no later example's executor
        claims their work (each example must see only its own)."""
        if not self.ids:
            return
        with self.platform.uow(write=True) as uow:
            uow.session.execute(update(RolloutRow).where(RolloutRow.id.in_(self.ids)).values(control="aborted"))
            uow.session.execute(update(RolloutActionRow).where(
                RolloutActionRow.rollout_id.in_(self.ids), RolloutActionRow.status.in_(["pending", "running"]))
                .values(status="cancelled"))
            uow.commit()

    # --- invariants ----------------------------------------------------------------------------------

    @invariant()
    def status_follows_the_counts(self) -> None:
        for rid in self.ids:
            v = self._view(rid)
            c = Counter(v.counts)
            planned = sum(w.size for w in v.waves)
            assert sum(c.values()) - c["skipped"] == planned == v.total
            for w in v.waves:
                assert sum(w.counts.values()) == w.size, (rid, w)
            active = c["pending"] + c["running"]
            waves_done = all(w.finished_at is not None for w in v.waves)
            expected = {
                "succeeded": v.control == "running" and c["succeeded"] == planned and waves_done,
                "finished with failures": v.control == "running" and not active and c["failed"] > 0 and waves_done,
                "aborted": v.control == "aborted" and not active,
                "aborting": v.control == "aborted" and c["running"] > 0 and not c["pending"],
                "running": v.control == "running" and (active > 0 or not waves_done),
                "paused": v.control == "paused",
                "ready": v.control == "ready" and c["pending"] == planned,
                "awaiting_approval": v.control == "awaiting_approval" and c["pending"] == planned,
            }
            assert expected.get(v.status), (rid, v.status, v.control, dict(c))

    @invariant()
    def finished_rollouts_never_change(self) -> None:
        for rid in self.ids:
            v = self._view(rid)
            if rid in self.final:
                assert (v.status, v.counts) == self.final[rid], f"rollout {rid}'s outcome was rewritten"
            elif v.status in FINAL:
                self.final[rid] = (v.status, v.counts)
                self.steps[f"reached {v.status}"] += 1

    @invariant()
    def no_device_action_decided_twice(self) -> None:
        with self.platform.uow() as uow:
            twice = uow.session.execute(
                select(AuditEventRow.target_id, func.count()).where(
                    AuditEventRow.action.in_(["rollout.device_succeeded", "rollout.device_failed"]),
                    AuditEventRow.target_id.like("SM-%"))
                .group_by(AuditEventRow.target_id).having(func.count() > 1)).all()
        assert not twice, twice


def _run(platform: Platform, city: Caller, tmp_path: Path, examples: int, steps: int) -> Counter[str]:
    zones.create_zone(platform.uow, city, "north")
    zones.create_zone(platform.uow, city, "hospital", "critical")
    offset = [0.0]
    platform.uow.clock = lambda: datetime.now(UTC) + timedelta(seconds=offset[0])
    counts: Counter[str] = Counter()
    RolloutMachine.platform, RolloutMachine.city, RolloutMachine.store = platform, city, tmp_path
    RolloutMachine.approver = caller_for(platform, "Springfield")
    RolloutMachine.numbers, RolloutMachine.clock, RolloutMachine.steps = itertools.count(1), offset, counts
    run_state_machine_as_test(RolloutMachine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    return counts


def test_rollout_state_machine(platform: Platform, city: Caller, tmp_path: Path) -> None:
    # PostgreSQL steps cost about four times SQLite's: fewer sequences there, the same rules.
    examples = 100 if platform.engine.dialect.name == "sqlite" else 15
    counts = _run(platform, city, tmp_path, examples, 50)
    print(f"\n{platform.engine.dialect.name}: {examples} sequences, {sum(counts.values())} steps: "
          f"{dict(sorted(counts.items()))}")
    # The sequences reached every kind of step, refusals and finished rollouts included (kinds
    # that come up dozens of times per run, so this does not depend on luck).
    for kind in ("create", "tick", "crash", "result taken", "result ignored", "abort accepted", "abort refused",
                 "start accepted", "pause accepted", "resume accepted", "approve accepted", "reached aborted"):
        assert counts[kind] > 0, (kind, counts)
    assert counts["reached succeeded"] + counts["reached finished with failures"] > 0, counts

