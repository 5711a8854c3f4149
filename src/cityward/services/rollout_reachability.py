"""What the database knows, before a rollout is planned, about whether each device can take a
command now: its reported state, its most recent command results (lone `devices command` ones and
rollout actions alike), the actions its hello announced, and any refusal of this action as
unsupported. The verdict itself is the domain's (`cannot_succeed`, `is_recent`).

Set-wise reads in chunks of device ids, so a plan over a large fleet stays a handful of queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import (
    DeviceCommandRow,
    DeviceStateRow,
    DiscoveredDeviceRow,
    RolloutActionRow,
    RolloutRow,
)
from cityward.domain.rollouts import DEVICE_ACTION, ActionStatus, Operation, Reachability, is_unsupported_answer

_CHUNK = 900  # ids per IN (...): within SQLite's bound-parameter limit
_DECIDED_COMMANDS = ("succeeded", "failed", "rejected")
_DECIDED_ACTIONS = (ActionStatus.SUCCEEDED.value, ActionStatus.FAILED.value)


def _aware(t: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they are stored in UTC."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@dataclass
class _Seen:
    online: bool | None = None
    offline_since: datetime | None = None
    offline_reason: str | None = None
    last_seen: datetime | None = None
    last_result_at: datetime | None = None
    unreachable_at: datetime | None = None
    unreachable_detail: str | None = None
    actions: frozenset[str] | None = None
    rollback: bool | None = None
    last_of_action: tuple[datetime, str | None, bool] | None = None  # (at, detail, refused as unsupported)

    def result(self, at: datetime | None, status: str, detail: str | None) -> None:
        at = _aware(at)
        if at is None:
            return
        if self.last_result_at is None or at > self.last_result_at:
            self.last_result_at = at
        if status == "failed" and (detail or "").startswith("unreachable") and (
                self.unreachable_at is None or at > self.unreachable_at):
            self.unreachable_at, self.unreachable_detail = at, detail

    def of_action(self, at: datetime | None, status: str, detail: str | None) -> None:
        at = _aware(at)
        if at is None or (self.last_of_action is not None and at <= self.last_of_action[0]):
            return
        # Rollout actions keep the device's detail but not its `rejected` status word.
        refused = status in ("rejected", "failed") and is_unsupported_answer(detail)
        self.last_of_action = (at, detail, refused)


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i:i + _CHUNK])


def reachability(s: Session, device_ids: Sequence[str], operation: Operation) -> dict[str, Reachability]:
    action = DEVICE_ACTION[operation]
    seen = {d: _Seen() for d in device_ids}
    for part in _chunks(device_ids):
        for device_id, online, since, reason, last_seen in s.execute(
                select(DeviceStateRow.device_id, DeviceStateRow.online, DeviceStateRow.status_at,
                       DeviceStateRow.offline_reason, DeviceStateRow.last_seen)
                .where(DeviceStateRow.device_id.in_(part))):
            x = seen[device_id]
            x.online, x.offline_since, x.offline_reason, x.last_seen = online, _aware(since), reason, _aware(last_seen)
        for device_id, act, status, detail, at in s.execute(
                select(DeviceCommandRow.device_id, DeviceCommandRow.action, DeviceCommandRow.status,
                       DeviceCommandRow.detail, DeviceCommandRow.updated_at)
                .where(DeviceCommandRow.device_id.in_(part), DeviceCommandRow.status.in_(_DECIDED_COMMANDS))):
            seen[device_id].result(at, status, detail)
            if act == action:
                seen[device_id].of_action(at, status, detail)
        for device_id, op, status, detail, at in s.execute(
                select(RolloutActionRow.device_id, RolloutRow.operation, RolloutActionRow.status,
                       RolloutActionRow.detail, RolloutActionRow.updated_at)
                .join(RolloutRow, RolloutRow.id == RolloutActionRow.rollout_id)
                .where(RolloutActionRow.device_id.in_(part), RolloutActionRow.status.in_(_DECIDED_ACTIONS))):
            seen[device_id].result(at, status, detail)
            if DEVICE_ACTION.get(Operation(op)) == action:
                seen[device_id].of_action(at, status, detail)
        for device_id, hello in s.execute(
                select(DiscoveredDeviceRow.device_id, DiscoveredDeviceRow.hello)
                .where(DiscoveredDeviceRow.device_id.in_(part), DiscoveredDeviceRow.status == "approved")):
            _announced(seen[device_id], hello)
    return {d: Reachability(
        online=x.online, offline_since=x.offline_since, offline_reason=x.offline_reason, last_seen=x.last_seen,
        last_result_at=x.last_result_at, unreachable_at=x.unreachable_at, unreachable_detail=x.unreachable_detail,
        announced_actions=x.actions, announced_rollback=x.rollback,
        rejected=x.last_of_action[1] if x.last_of_action and x.last_of_action[2] else None)
        for d, x in seen.items()}


def _announced(x: _Seen, hello: Any) -> None:
    if not isinstance(hello, dict):
        return
    actions = hello.get("actions")
    if isinstance(actions, list) and actions and all(isinstance(a, str) for a in actions):
        x.actions = frozenset(actions)
    if isinstance(hello.get("rollback"), bool):
        x.rollback = hello["rollback"]
