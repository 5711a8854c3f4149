"""Rollouts: one operation carried to many devices in waves, safely. Pure rules, no I/O.

A rollout's progress is never stored twice: the campaign's and each wave's status are derived from
the per-device action counts and the one control state an operator sets (running, paused,
aborted). The rules here decide which devices go in which wave, whether a wave may advance, and
whether a zone's maintenance window lets work start now.

The state machine lives here too (`rollout_state`, `TRANSITIONS`, `transition`): every entry point
(CLI, API, dashboard, the executor's own threshold verdicts) asks it before changing a rollout, so a
finished rollout is refused the same way everywhere and its outcome is never rewritten.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from cityward.domain.zones import MaintenanceWindow
from cityward.errors import Conflict, Problem


class Operation(StrEnum):
    UPGRADE_FIRMWARE = "upgrade_firmware"
    ROLLBACK_FIRMWARE = "rollback_firmware"
    SET_CONFIG = "set_config"
    ROTATE_PASSWORD = "rotate_password"  # noqa: S105 - an operation name, not a password
    RENEW_CERTIFICATE = "renew_certificate"
    REBOOT = "reboot"
    QUARANTINE = "quarantine"
    RELEASE = "release"


# The device protocol action each operation sends (docs/protocol.md §1).
DEVICE_ACTION: dict[Operation, str] = {
    Operation.UPGRADE_FIRMWARE: "upgrade_firmware", Operation.ROLLBACK_FIRMWARE: "rollback_firmware",
    Operation.SET_CONFIG: "set_config", Operation.ROTATE_PASSWORD: "set_password",
    Operation.RENEW_CERTIFICATE: "install_certificate", Operation.REBOOT: "reboot",
    Operation.QUARANTINE: "quarantine", Operation.RELEASE: "release",
}
# A quarantined device still takes these (it must be fixable while isolated).
ALLOWED_IN_QUARANTINE = frozenset({Operation.UPGRADE_FIRMWARE, Operation.ROTATE_PASSWORD,
                                   Operation.RENEW_CERTIFICATE, Operation.RELEASE, Operation.REBOOT})
# Every rollout command id starts so (rollout-{rollout}-{action}-{attempt}): other listeners on
# the result topics know whose it is.
ROLLOUT_COMMAND_PREFIX = "rollout-"
# Rough seconds one device takes, for the plan's estimate.
TYPICAL_SECONDS: dict[Operation, float] = {
    Operation.UPGRADE_FIRMWARE: 90.0, Operation.ROLLBACK_FIRMWARE: 30.0, Operation.SET_CONFIG: 1.0,
    Operation.ROTATE_PASSWORD: 1.0, Operation.RENEW_CERTIFICATE: 2.0, Operation.REBOOT: 20.0,
    Operation.QUARANTINE: 1.0, Operation.RELEASE: 1.0,
}
# How long one device may take, by operation, when nothing more specific is known (seconds): the
# attempt timeout when a rollout sets none, and how long a device that took its command may stay
# silent and still count as working. Firmware: the product's `upgrade_minutes` from the catalog
# when declared; a real camera downloads, flashes and reboots in several minutes, not seconds.
EXPECTED_SECONDS: dict[Operation, float] = {
    Operation.UPGRADE_FIRMWARE: 900.0, Operation.ROLLBACK_FIRMWARE: 300.0, Operation.SET_CONFIG: 60.0,
    Operation.ROTATE_PASSWORD: 60.0, Operation.RENEW_CERTIFICATE: 60.0, Operation.REBOOT: 120.0,
    Operation.QUARANTINE: 60.0, Operation.RELEASE: 60.0,
}
# Operations whose duration the product's declared upgrade time gives (both flash and reboot).
FIRMWARE_OPERATIONS = frozenset({Operation.UPGRADE_FIRMWARE, Operation.ROLLBACK_FIRMWARE})
# A device that keeps saying it is working is followed under the same command id for at most this
# many times its expected duration (and never past a day): one that reports progress forever is
# stuck, not slow.
FOLLOW_FACTOR = 10
MAX_FOLLOW_SECONDS = 24 * 3600.0


def expected_seconds(operation: Operation, upgrade_minutes: float | None = None) -> float:
    """How long one device is expected to take: the product's declared upgrade duration for
    firmware, else the operation's default (`EXPECTED_SECONDS`)."""
    if operation in FIRMWARE_OPERATIONS and upgrade_minutes is not None and upgrade_minutes > 0:
        return float(upgrade_minutes) * 60.0
    return EXPECTED_SECONDS[operation]


def attempt_timeout(timeout_s: float | None, expected: float) -> float:
    """Seconds one attempt waits for a terminal result: the rollout's `--timeout`, or, when it set
    none, the operation's expected duration."""
    return float(timeout_s) if timeout_s is not None else expected


def follow_limit(timeout: float, expected: float) -> float:
    """The longest one command id is followed while its device keeps saying it is working."""
    return min(max(timeout, expected * FOLLOW_FACTOR), MAX_FOLLOW_SECONDS)


class ActionStatus(StrEnum):
    PENDING = "pending"  # waiting for its wave, its window or a free slot
    RUNNING = "running"  # a command is out (claimed, with a lease)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed
    SKIPPED = "skipped"  # never sent: the plan's reason
    CANCELLED = "cancelled"  # never sent: the rollout was aborted


TERMINAL = frozenset({ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.SKIPPED, ActionStatus.CANCELLED})


class Control(StrEnum):
    """What an operator asked for; everything else is derived."""

    AWAITING_APPROVAL = "awaiting_approval"
    READY = "ready"  # created (and approved where needed), not started
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"


class FailureAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"


@dataclass(frozen=True)
class WaveOptions:
    """How a rollout advances: hawkBit's groups and thresholds, with a canary first."""

    canary: int = 1  # devices in the first wave
    percentages: tuple[int, ...] = (10, 50, 100)  # cumulative share of the fleet done after each later wave
    concurrency: int = 50  # device actions in flight at once
    timeout_s: float | None = None  # per attempt; None: the operation's expected duration (EXPECTED_SECONDS)
    retries: int = 1  # extra attempts after a failed one
    success_threshold: int = 90  # % of a wave's devices that must succeed before the next starts
    failure_threshold: int = 10  # % of a wave's devices failed, or (below)
    failure_count: int | None = None  # failures in a wave, whichever comes first
    on_failure: FailureAction = FailureAction.PAUSE

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        if self.canary < 0:
            found.append(Problem("must be 0 or more", field="canary"))
        pcts = self.percentages
        if not pcts or any(not 0 < p <= 100 for p in pcts) or list(pcts) != sorted(set(pcts)) or pcts[-1] != 100:
            found.append(Problem("must be growing percentages between 1 and 100, ending at 100", field="waves"))
        if not 1 <= self.concurrency <= 10_000:
            found.append(Problem("must be between 1 and 10000", field="concurrency"))
        if self.timeout_s is not None and not 1 <= self.timeout_s <= 24 * 3600:
            found.append(Problem("must be between 1 second and 24 hours", field="timeout"))
        if not 0 <= self.retries <= 10:
            found.append(Problem("must be between 0 and 10", field="retries"))
        if not 0 <= self.success_threshold <= 100:
            found.append(Problem("must be a percentage", field="success_threshold"))
        if not 0 <= self.failure_threshold <= 100:
            found.append(Problem("must be a percentage", field="failure_threshold"))
        if self.failure_count is not None and self.failure_count < 1:
            found.append(Problem("must be 1 or more", field="failure_count"))
        return found


def plan_waves(devices: Sequence[str], groups: Mapping[str, str], options: WaveOptions,
               recent: Collection[str] = ()) -> list[list[str]]:
    """Split `devices` into waves: the canary, then cumulative percentages of all of them.

    The order interleaves `groups` (device -> zone/product), so the canary and every early wave
    sample each group instead of taking one street first. The canary is drawn from the `recent`
    devices (those that reported lately) first: a canary that fails because it was already gone
    stops the rollout for nothing."""
    by_group: dict[str, list[str]] = {}
    for d in sorted(devices):
        by_group.setdefault(groups.get(d, ""), []).append(d)
    order: list[str] = []
    queues = [by_group[g] for g in sorted(by_group)]
    for i in range(max((len(q) for q in queues), default=0)):
        order.extend(q[i] for q in queues if i < len(q))
    total = len(order)
    if recent and options.canary:
        fresh = set(recent)
        canary = [d for d in order if d in fresh][:options.canary]
        canary += [d for d in order if d not in fresh][:options.canary - len(canary)]
        chosen = set(canary)
        order = canary + [d for d in order if d not in chosen]
    waves: list[list[str]] = []
    done = min(options.canary, total)
    if done:
        waves.append(order[:done])
    for pct in options.percentages:
        upto = max(done, math.ceil(total * pct / 100))
        if upto > done:
            waves.append(order[done:upto])
            done = upto
    return waves


class Verdict(StrEnum):
    WAIT = "wait"  # actions still pending or running
    ADVANCE = "advance"  # the wave is done and good enough
    PAUSE = "pause"
    ABORT = "abort"


@dataclass(frozen=True)
class WaveCounts:
    size: int  # devices planned in the wave (skipped ones excluded)
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    pending: int = 0

    @classmethod
    def of(cls, statuses: Iterable[str]) -> WaveCounts:
        c = Counter(statuses)
        size = sum(n for s, n in c.items() if s not in (ActionStatus.SKIPPED, ActionStatus.CANCELLED))
        return cls(size, c[ActionStatus.SUCCEEDED], c[ActionStatus.FAILED], c[ActionStatus.RUNNING],
                   c[ActionStatus.PENDING])


def wave_verdict(counts: WaveCounts, options: WaveOptions) -> Verdict:
    """Failures stop a wave as soon as they pass the threshold (no need to wait for the rest);
    a finished wave advances only with enough successes."""
    if counts.size == 0:
        return Verdict.ADVANCE
    too_many = (counts.failed * 100 > options.failure_threshold * counts.size
                or (options.failure_count is not None and counts.failed >= options.failure_count))
    if too_many:
        return Verdict.PAUSE if options.on_failure is FailureAction.PAUSE else Verdict.ABORT
    if counts.pending or counts.running:
        return Verdict.WAIT
    if counts.succeeded * 100 < options.success_threshold * counts.size:
        return Verdict.PAUSE if options.on_failure is FailureAction.PAUSE else Verdict.ABORT
    return Verdict.ADVANCE


# --- the state machine ---------------------------------------------------------------------------


class RolloutState(StrEnum):
    """Where a rollout is: derived (Mender-style) from the control state, the action counts, and
    whether the executor has closed every wave. The values are what `status` shows."""

    AWAITING_APPROVAL = "awaiting_approval"
    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"  # aborted, commands already out still finishing
    ABORTED = "aborted"
    SUCCEEDED = "succeeded"
    FINISHED_WITH_FAILURES = "finished with failures"


# Final: no command is accepted and no count changes any more.
TERMINAL_STATES = frozenset({RolloutState.ABORTED, RolloutState.SUCCEEDED, RolloutState.FINISHED_WITH_FAILURES})


class RolloutCommand(StrEnum):
    """What an operator (or the executor's threshold verdict) asks of a rollout."""

    APPROVE = "approve"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"

    @property
    def past(self) -> str:
        return {"approve": "approved", "start": "started", "pause": "paused", "resume": "resumed",
                "abort": "aborted"}[self.value]


# The only allowed transitions: state -> command -> the control state it sets. Anything missing
# (every command from a terminal state, or from `aborting`) is refused.
TRANSITIONS: Mapping[RolloutState, Mapping[RolloutCommand, Control]] = {
    RolloutState.AWAITING_APPROVAL: {RolloutCommand.APPROVE: Control.READY, RolloutCommand.ABORT: Control.ABORTED},
    RolloutState.READY: {RolloutCommand.START: Control.RUNNING, RolloutCommand.ABORT: Control.ABORTED},
    RolloutState.RUNNING: {RolloutCommand.PAUSE: Control.PAUSED, RolloutCommand.ABORT: Control.ABORTED},
    RolloutState.PAUSED: {RolloutCommand.RESUME: Control.RUNNING, RolloutCommand.ABORT: Control.ABORTED},
    RolloutState.ABORTING: {},
    RolloutState.ABORTED: {},
    RolloutState.SUCCEEDED: {},
    RolloutState.FINISHED_WITH_FAILURES: {},
}

_NEXT_STEP: dict[RolloutState, str] = {
    RolloutState.AWAITING_APPROVAL: "another city user must approve it first: cityward rollout approve",
    RolloutState.READY: "start it: cityward rollout start",
    RolloutState.RUNNING: "pause or abort it",
    RolloutState.PAUSED: "resume or abort it",
    RolloutState.ABORTING: "it is being aborted: commands already out finish, nothing new starts",
    RolloutState.ABORTED: "an aborted rollout is final; plan a new one with cityward rollout create",
    RolloutState.SUCCEEDED: "a finished rollout is final; plan a new one with cityward rollout create",
    RolloutState.FINISHED_WITH_FAILURES: "a finished rollout is final; retry the failed devices with a new "
                                         "rollout (cityward rollout status ID --failed lists them)",
}


def next_step(state: RolloutState) -> str:
    """What a person can do with a rollout in this state (the hint of every refusal)."""
    return _NEXT_STEP[state]


class RolloutStateConflict(Conflict):
    """A command the rollout's current state does not allow (e.g. abort after it succeeded)."""

    title = "Rollout state conflict"

    def __init__(self, rollout_id: int, state: RolloutState, command: RolloutCommand) -> None:
        super().__init__(f"rollout {rollout_id} is {state.value}: it cannot be {command.past}",
                         hint=_NEXT_STEP[state])
        self.rollout_id = rollout_id
        self.state = state
        self.command = command


def rollout_state(control: Control, counts: Mapping[str, int], *, waves_open: bool) -> RolloutState:
    """The derived state. A running rollout is finished only once every action is decided *and*
    the executor has closed every wave: until then a threshold verdict may still pause or abort
    it, so calling it succeeded earlier would let that verdict rewrite an outcome already shown."""
    running = counts.get(ActionStatus.RUNNING, 0)
    if control is Control.ABORTED:
        return RolloutState.ABORTING if running else RolloutState.ABORTED
    if control is not Control.RUNNING:
        return RolloutState(control.value)
    if waves_open or running or counts.get(ActionStatus.PENDING, 0):
        return RolloutState.RUNNING
    return RolloutState.FINISHED_WITH_FAILURES if counts.get(ActionStatus.FAILED, 0) else RolloutState.SUCCEEDED


def allowed_commands(state: RolloutState) -> tuple[RolloutCommand, ...]:
    return tuple(TRANSITIONS[state])


def transition(rollout_id: int, state: RolloutState, command: RolloutCommand) -> Control:
    """The control state `command` sets from `state`, or RolloutStateConflict naming both."""
    to = TRANSITIONS[state].get(command)
    if to is None:
        raise RolloutStateConflict(rollout_id, state, command)
    return to


def campaign_status(control: Control, counts: Mapping[str, int], *, waves_open: bool = False) -> str:
    """Mender-style derived status from the control state and the action counts."""
    return rollout_state(control, counts, waves_open=waves_open).value


# --- maintenance windows -----------------------------------------------------------------------


def window_problems(window: MaintenanceWindow, now: datetime) -> list[Problem]:
    """A window must parse and open at least once in the coming year."""
    found = window.problems()
    if found:
        return found
    try:
        nxt = next_opening(window, now)
    except CronSimError as exc:
        return [Problem(f"bad cron expression: {exc}", field="cron")]
    if nxt is None or nxt - now > timedelta(days=366):
        return [Problem(f"the window {window.cron!r} never opens in the coming year", field="cron")]
    return []


def _local(window: MaintenanceWindow, at: datetime) -> datetime:
    return at.astimezone(ZoneInfo(window.timezone)).replace(tzinfo=None, second=0, microsecond=0)


def window_open(window: MaintenanceWindow, at: datetime) -> bool:
    """Is `at` (aware) inside an opening of the window (in the window's own time zone)?"""
    local = _local(window, at)
    try:
        start = next(CronSim(window.cron, local + timedelta(seconds=1), reverse=True))
    except (StopIteration, CronSimError):
        return False
    return local < start + timedelta(minutes=window.duration_minutes)


def next_opening(window: MaintenanceWindow, at: datetime) -> datetime | None:
    """`at` itself when the window is open, else the next start (aware, UTC); None if never."""
    if window_open(window, at):
        return at
    local = _local(window, at)
    try:
        start = next(CronSim(window.cron, local))
    except StopIteration:
        return None
    return start.replace(tzinfo=ZoneInfo(window.timezone)).astimezone(at.tzinfo)


# --- the plan ----------------------------------------------------------------------------------

# A device that reported within this long is a good canary.
RECENT_REPORT = timedelta(minutes=15)


@dataclass(frozen=True)
class Reachability:
    """What is known, before planning, about whether a device can take a command now."""

    online: bool | None = None  # None: it never reported
    offline_since: datetime | None = None
    offline_reason: str | None = None  # will, silence, gateway, poll
    last_seen: datetime | None = None
    last_result_at: datetime | None = None  # its most recent decided command (lone or rollout)
    unreachable_at: datetime | None = None  # its most recent command that failed as unreachable
    unreachable_detail: str | None = None
    announced_actions: frozenset[str] | None = None  # from its hello, where one is on record
    announced_rollback: bool | None = None
    rejected: str | None = None  # its answer when it last refused this action as unsupported


# A device's answer to an action it does not have (docs/protocol.md §1: `rejected`).
UNSUPPORTED_DETAILS = ("unknown action", "not supported")


def is_unsupported_answer(detail: str | None) -> bool:
    return detail is not None and any(m in detail.lower() for m in UNSUPPORTED_DETAILS)


def _at(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC" if t else "an unknown time"


def cannot_succeed(operation: Operation, r: Reachability) -> str | None:
    """Why a command for `operation` cannot succeed on this device now, or None.

    Offline devices; devices whose last command failed as unreachable with no sign of life since;
    devices that do not have the action (their hello says so, or they refused it as unsupported)."""
    action = DEVICE_ACTION[operation]
    if r.online is False:
        return f"offline since {_at(r.offline_since)}" + (f" ({r.offline_reason})" if r.offline_reason else "")
    if (r.unreachable_at is not None and (r.last_result_at is None or r.unreachable_at >= r.last_result_at)
            and (r.last_seen is None or r.last_seen <= r.unreachable_at)):
        return (f"unreachable in its last command ({_at(r.unreachable_at)}) and silent since"
                + (f": {r.unreachable_detail[:120]}" if r.unreachable_detail else ""))
    if r.announced_actions and action not in r.announced_actions:
        return f"does not support {action} (not among the actions its hello announces)"
    if operation is Operation.ROLLBACK_FIRMWARE and r.announced_rollback is False:
        return "does not support rollback_firmware (its hello announces no rollback)"
    if r.rejected is not None:
        return f"does not support {action} (it answered {r.rejected[:80]!r})"
    return None


def is_recent(r: Reachability, now: datetime) -> bool:
    return r.online is not False and r.last_seen is not None and now - r.last_seen <= RECENT_REPORT


@dataclass(frozen=True)
class Skip:
    device_id: str
    reason: str


@dataclass
class PlanSummary:
    """What `rollout plan` shows before anything runs."""

    waves: list[list[str]]
    skipped: list[Skip]
    windows: dict[str, str] = field(default_factory=dict)  # zone -> "open now" / "opens at …"
    needs_approval: bool = False
    approval_zones: list[str] = field(default_factory=list)
    estimated: timedelta = timedelta(0)

    @property
    def devices(self) -> int:
        return sum(len(w) for w in self.waves)


def estimate(waves: Sequence[Sequence[str]], operation: Operation, options: WaveOptions) -> timedelta:
    """Each wave runs in ceil(n / concurrency) rounds of the operation's typical time."""
    per = TYPICAL_SECONDS[operation]
    return timedelta(seconds=sum(math.ceil(len(w) / options.concurrency) * per for w in waves))
