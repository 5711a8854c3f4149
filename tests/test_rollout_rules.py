"""The pure rollout rules: waves, thresholds, derived status, maintenance windows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityward.domain.rollouts import (
    ActionStatus,
    Control,
    FailureAction,
    Verdict,
    WaveCounts,
    WaveOptions,
    campaign_status,
    next_opening,
    plan_waves,
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
