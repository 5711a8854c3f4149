"""The pure rollout rules: waves, thresholds, derived status, maintenance windows."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityward.domain.rollouts import (
    TERMINAL_STATES,
    ActionStatus,
    Control,
    FailureAction,
    Operation,
    Reachability,
    RolloutCommand,
    RolloutState,
    RolloutStateConflict,
    Verdict,
    WaveCounts,
    WaveOptions,
    allowed_commands,
    campaign_status,
    cannot_succeed,
    is_recent,
    next_opening,
    plan_waves,
    rollout_state,
    transition,
    wave_verdict,
    window_open,
    window_problems,
)
from cityward.domain.zones import MaintenanceWindow

PCTS = st.lists(st.integers(1, 99), max_size=4).map(lambda xs: (*sorted(set(xs)), 100))


@given(n=st.integers(0, 400), canary=st.integers(0, 10), pcts=PCTS, zones=st.integers(1, 6))
def test_every_device_exactly_once_canary_first_and_cumulative_shares(n: int, canary: int,
                                                                     pcts: tuple[int, ...], zones: int) -> None:
    devices = [f"D{i:04d}" for i in range(n)]
    groups = {d: f"zone-{i % zones}" for i, d in enumerate(devices)}
    waves = plan_waves(devices, groups, WaveOptions(canary=canary, percentages=pcts))
    flat = [d for w in waves for d in w]
    assert sorted(flat) == devices and all(waves)  # each once, no empty wave
    if n and canary:
        assert len(waves[0]) == min(canary, n)
    done = min(canary, n)
    for pct in pcts:  # after each percentage step, at least that share is done
        need = max(done, math.ceil(n * pct / 100))
        assert sum(len(w) for w in waves) >= need
        done = need


@given(n=st.integers(0, 200), canary=st.integers(0, 10), pcts=PCTS, zones=st.integers(1, 6),
       recent=st.sets(st.integers(0, 199)))
def test_the_canary_comes_from_recently_reporting_devices(n: int, canary: int, pcts: tuple[int, ...], zones: int,
                                                         recent: set[int]) -> None:
    devices = [f"D{i:04d}" for i in range(n)]
    fresh = [devices[i] for i in sorted(recent) if i < n]
    waves = plan_waves(devices, {d: f"zone-{i % zones}" for i, d in enumerate(devices)},
                       WaveOptions(canary=canary, percentages=pcts), fresh)
    assert sorted(d for w in waves for d in w) == devices
    if n and canary:
        first = set(waves[0])
        assert len(first) == min(canary, n)
        assert first <= set(fresh) or set(fresh) <= first  # recent ones first, the rest only to fill up


def test_cannot_succeed_says_why() -> None:
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert cannot_succeed(Operation.REBOOT, Reachability()) is None  # nothing known: try it
    assert cannot_succeed(Operation.REBOOT, Reachability(online=False, offline_since=now, offline_reason="silence")) \
        == "offline since 2026-12-07 09:00 UTC (silence)"
    gone = Reachability(unreachable_at=now - hour, last_result_at=now - hour, unreachable_detail="unreachable: x")
    assert cannot_succeed(Operation.SET_CONFIG, gone) == \
        "unreachable in its last command (2026-12-07 08:00 UTC) and silent since: unreachable: x"
    assert cannot_succeed(Operation.SET_CONFIG, replace(gone, last_seen=now)) is None  # it reported since
    assert cannot_succeed(Operation.SET_CONFIG, replace(gone, last_result_at=now)) is None  # a later result
    assert cannot_succeed(Operation.ROTATE_PASSWORD, Reachability(announced_actions=frozenset({"reboot"}))) == \
        "does not support set_password (not among the actions its hello announces)"
    assert cannot_succeed(Operation.ROLLBACK_FIRMWARE, Reachability(announced_rollback=False)) is not None
    assert is_recent(Reachability(online=True, last_seen=now - timedelta(minutes=5)), now)
    assert not is_recent(Reachability(online=True, last_seen=now - 2 * hour), now)
    assert not is_recent(Reachability(online=False, last_seen=now), now)


def test_canary_and_first_waves_sample_every_zone() -> None:
    devices = [f"{z}-{i}" for z in "ABC" for i in range(10)]
    waves = plan_waves(devices, {d: d[0] for d in devices}, WaveOptions(canary=3, percentages=(50, 100)))
    assert {d[0] for d in waves[0]} == set("ABC")
    assert [len(w) for w in waves] == [3, 12, 15]


OPTS = WaveOptions(success_threshold=90, failure_threshold=10, failure_count=None)


@pytest.mark.parametrize(("counts", "options", "expected"), [
    (WaveCounts(10, succeeded=5, pending=5), OPTS, Verdict.WAIT),
    (WaveCounts(10, succeeded=10), OPTS, Verdict.ADVANCE),
    (WaveCounts(10, succeeded=9, failed=1), OPTS, Verdict.ADVANCE),  # 10 % is not over 10 %
    (WaveCounts(10, succeeded=3, failed=2, pending=5), OPTS, Verdict.PAUSE),  # stops early, mid-wave
    (WaveCounts(10, succeeded=3, failed=2, pending=5),
     WaveOptions(on_failure=FailureAction.ABORT), Verdict.ABORT),
    (WaveCounts(100, succeeded=50, failed=3, pending=47),
     WaveOptions(failure_threshold=50, failure_count=3), Verdict.PAUSE),  # the count comes first
    (WaveCounts(10, succeeded=8, failed=0, running=0, pending=0), OPTS, Verdict.PAUSE),  # 80 % < 90 %
    (WaveCounts(0), OPTS, Verdict.ADVANCE),
])
def test_wave_verdict(counts: WaveCounts, options: WaveOptions, expected: Verdict) -> None:
    assert wave_verdict(counts, options) is expected


def test_counts_ignore_skipped_and_cancelled() -> None:
    c = WaveCounts.of(["succeeded", "skipped", "cancelled", "failed", "pending"])
    assert (c.size, c.succeeded, c.failed, c.pending) == (3, 1, 1, 1)


def test_campaign_status_is_derived() -> None:
    assert campaign_status(Control.RUNNING, {ActionStatus.PENDING: 3}) == "running"
    assert campaign_status(Control.RUNNING, {ActionStatus.SUCCEEDED: 3}) == "succeeded"
    assert campaign_status(Control.RUNNING, {ActionStatus.SUCCEEDED: 3, ActionStatus.FAILED: 1}) == \
        "finished with failures"
    assert campaign_status(Control.ABORTED, {ActionStatus.RUNNING: 1}) == "aborting"
    assert campaign_status(Control.PAUSED, {ActionStatus.PENDING: 1}) == "paused"


def test_options_are_checked() -> None:
    bad = WaveOptions(canary=-1, percentages=(50, 20, 100), concurrency=0, retries=11, failure_count=0)
    fields = {p.field for p in bad.problems()}
    assert fields == {"canary", "waves", "concurrency", "retries", "failure_count"}
    assert WaveOptions(percentages=(10, 50)).problems()[0].field == "waves"  # must end at 100
    assert WaveOptions().problems() == []


NIGHT = MaintenanceWindow("0 2 * * *", 120, "Europe/Paris")  # 02:00-04:00 Paris time


def test_window_in_its_own_time_zone() -> None:
    # 2026-11-25 is winter time: Paris = UTC+1, so the window is 01:00-03:00 UTC.
    day = datetime(2026, 11, 25, tzinfo=UTC)
    assert not window_open(NIGHT, day + timedelta(hours=0, minutes=59))
    assert window_open(NIGHT, day + timedelta(hours=1))
    assert window_open(NIGHT, day + timedelta(hours=2, minutes=59))
    assert not window_open(NIGHT, day + timedelta(hours=3))
    assert next_opening(NIGHT, day + timedelta(hours=12)) == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    at = day + timedelta(hours=1, minutes=30)
    assert next_opening(NIGHT, at) == at


def test_windows_that_never_open_are_refused() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert window_problems(MaintenanceWindow("0 0 31 2 *", 60), now)[0].field == "cron"  # 31 February
    assert window_problems(MaintenanceWindow("0 0 * *", 60), now)[0].field == "cron"
    assert window_problems(MaintenanceWindow("0 2 * * *", 60, "Mars/Olympus"), now)[0].field == "timezone"
    assert window_problems(NIGHT, now) == []


def test_the_state_machine_refuses_everything_from_a_final_state() -> None:
    assert rollout_state(Control.RUNNING, {ActionStatus.SUCCEEDED: 3}, waves_open=True) is RolloutState.RUNNING
    assert rollout_state(Control.RUNNING, {ActionStatus.SUCCEEDED: 3}, waves_open=False) is RolloutState.SUCCEEDED
    assert rollout_state(Control.ABORTED, {ActionStatus.RUNNING: 1}, waves_open=True) is RolloutState.ABORTING
    for state in RolloutState:
        for command in RolloutCommand:
            allowed = command in allowed_commands(state)
            if state in TERMINAL_STATES or state is RolloutState.ABORTING:
                assert not allowed
            if not allowed:
                with pytest.raises(RolloutStateConflict) as info:
                    transition(7, state, command)
                assert (info.value.state, info.value.command) == (state, command)
                assert info.value.message == f"rollout 7 is {state.value}: it cannot be {command.past}"
    assert transition(1, RolloutState.PAUSED, RolloutCommand.RESUME) is Control.RUNNING
    assert transition(1, RolloutState.AWAITING_APPROVAL, RolloutCommand.APPROVE) is Control.READY
