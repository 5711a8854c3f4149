"""The tamper-evident audit log: each event's hash covers its content and the previous hash.

Editing an event changes its hash; deleting or reordering one breaks the next event's link or
the sequence; truncating the tail is caught by comparing the head with an anchored copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: datetime
    actor: str
    org_id: int | None
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


def canonical_time(at: datetime) -> str:
    """One spelling of an instant, whatever the database gave back (naive UTC or aware)."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    org_id: int | None,
    action: str,
    target_type: str,
    target_id: str,
    before: Any,
    after: Any,
) -> str:
    body = json.dumps(
        [seq, canonical_time(at), actor, org_id, action, target_type, target_id, before, after],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    events: int
    head: str
    first_broken: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def verify_chain(events: Iterable[AuditEvent]) -> ChainReport:
    """Walk the log in sequence order and name the first event that does not hold."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for ev in events:
        count += 1
        if ev.seq != expected_seq:
            reason = (
                f"sequence jumps from {expected_seq - 1} to {ev.seq}: events deleted or reordered"
            )
            return ChainReport(count, prev, ev.seq, reason)
        if ev.prev_hash != prev:
            return ChainReport(count, prev, ev.seq, "link to the previous event is broken")
        recomputed = event_hash(
            prev, ev.seq, ev.at, ev.actor, ev.org_id, ev.action,
            ev.target_type, ev.target_id, ev.before, ev.after,
        )
        if recomputed != ev.hash:
            return ChainReport(count, prev, ev.seq, "content was changed after it was written")
        prev = ev.hash
        expected_seq += 1
    return ChainReport(count, prev)
