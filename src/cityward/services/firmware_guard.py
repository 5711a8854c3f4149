"""When a firmware image may no longer be offered: the rollouts offering it stop, the city hears.

The trigger is a release refused while an executor builds its commands (its stored file no longer
hashes to the catalog's SHA-256 — "image changed on disk" — or its signing key was revoked), or a
download its server refused or cut off (services/firmware_downloads.py). Then, in one transaction:

- every started rollout offering that image (running or paused) is **aborted** by the state
  machine's own `abort`, its reason saying why ("image changed on disk: its SHA-256 is now …");
- its devices not yet told — pending ones, and the actions this executor claimed but had not sent —
  **fail** with that reason (not "cancelled": they did not get their firmware, and will not);
- commands already out finish: their device either received the verified image or its download
  was cut off short, and it reports so.

Aborted rather than paused: the file is not the image anyone verified, so nothing about the
rollout can safely go on; restore the image (or add a fixed release) and plan a new rollout. A
rollout not started yet is refused the same way when the executor first builds its commands.
All of it is audited (`firmware.image_changed`, `rollout.aborted`), and the executor alerts the
city's contacts through the notification channels (`alert`). Other rollouts are not touched.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from cityward.adapters.storage.models import FirmwareReleaseRow, RolloutActionRow, RolloutRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import (
    ActionStatus,
    Control,
    Operation,
    RolloutCommand,
    RolloutStateConflict,
    transition,
)
from cityward.services.rollouts import _state

ALERT_KIND = "firmware.image_changed"


@dataclass(frozen=True)
class Stopped:
    sha256: str
    reason: str
    releases: list[dict[str, Any]] = field(default_factory=list)  # id, product, version
    rollouts: list[int] = field(default_factory=list)  # aborted now
    failed: int = 0  # devices failed with the reason

    def alert(self) -> tuple[str, str, dict[str, Any]]:
        """Subject, text and payload of the city's alert."""
        what = ", ".join(f"release {r['id']} ({r['product']} {r['version']})" for r in self.releases) or "an image"
        subject = (f"cityward: firmware {what}: {self.reason.split(':')[0]}; "
                   f"{len(self.rollouts)} rollout{'s' if len(self.rollouts) != 1 else ''} aborted")
        lines = [f"The stored firmware image {self.sha256} ({what}) may not be offered to devices: {self.reason}.",
                 "No device was sent it: downloads of it are refused or cut off before their end.", ""]
        if self.rollouts:
            lines.append(f"Aborted: rollout {', '.join(map(str, self.rollouts))}; {self.failed} device(s) not yet "
                         "upgraded failed with this reason (cityward rollout status ID --failed).")
        else:
            lines.append("No started rollout was offering it.")
        lines += ["", "Find out who changed the file. Restore the manufacturer's original image (cityward firmware add "
                      "verifies it again), then plan a new rollout."]
        payload = {"sha256": self.sha256, "reason": self.reason, "releases": self.releases,
                   "rollouts_aborted": self.rollouts, "devices_failed": self.failed}
        return subject, "\n".join(lines), payload


def stop_rollouts(uow_factory: UnitOfWorkFactory, caller: Caller, sha256: str, reason: str, *,
                  claimed: Collection[int] = (), report: bool = True, event: str = ALERT_KIND) -> Stopped:
    """Abort every started rollout offering the image `sha256` and fail its devices not yet told
    (pending, or in `claimed`: claimed by this executor, never sent). `report`: record a
    `firmware.image_changed` event (`event`) even when no rollout was stopped (the first time
    this executor sees the change)."""
    with uow_factory(write=True) as uow:
        s = uow.session
        now = uow.clock()
        releases = {r.id: r for r in s.scalars(select(FirmwareReleaseRow).where(FirmwareReleaseRow.sha256 == sha256))}
        rows = [r for r in s.scalars(select(RolloutRow).where(
            RolloutRow.operation == Operation.UPGRADE_FIRMWARE.value,
            RolloutRow.control.in_([Control.RUNNING.value, Control.PAUSED.value]))
            .order_by(RolloutRow.id).with_for_update())
            if int((r.params or {}).get("release", -1)) in releases]
        stopped, failed = [], 0
        detail = reason[:500]
        for row in rows:
            state = _state(s, row)
            try:
                to = transition(row.id, state, RolloutCommand.ABORT)
            except RolloutStateConflict:  # finished meanwhile: nothing to stop
                continue
            before = row.control
            row.control, row.control_reason, row.updated_at = to.value, reason[:500], now
            pending = _count(s.execute(update(RolloutActionRow).where(
                RolloutActionRow.rollout_id == row.id, RolloutActionRow.status == ActionStatus.PENDING)
                .values(status=ActionStatus.FAILED.value, detail=detail, updated_at=now)))
            unsent = 0
            if claimed:
                unsent = _count(s.execute(update(RolloutActionRow).where(
                    RolloutActionRow.rollout_id == row.id, RolloutActionRow.status == ActionStatus.RUNNING,
                    RolloutActionRow.id.in_(sorted(claimed)))
                    .values(status=ActionStatus.FAILED.value, detail=detail, lease_until=None, secret=None,
                            updated_at=now)))
            failed += pending + unsent
            stopped.append(row.id)
            uow.record(caller, "rollout.aborted", "rollout", row.id, before={"control": before, "state": state.value},
                       after={"control": to.value, "reason": reason[:500], "devices_failed": pending + unsent})
        result = Stopped(sha256, reason, [{"id": r.id, "product": f"{r.brand} {r.model}", "version": r.version}
                                          for r in releases.values()], stopped, failed)
        if stopped or report:
            for rel in releases.values():
                uow.record(caller, event, "firmware_release", rel.id, after={
                    "sha256": sha256, "reason": reason[:500], "rollouts_aborted": stopped, "devices_failed": failed})
        uow.commit()
    return result


def _count(result: Any) -> int:
    """Rows an UPDATE changed."""
    return int(getattr(result, "rowcount", 0) or 0)
