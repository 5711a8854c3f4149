"""Figures too expensive to count on every page load, kept per scope and refreshed in the background.

The overview counts a whole fleet (a million devices: about a second of database work). Like the
posture dashboards of device-management products, it shows counts as of a stated time: a viewer gets
the last snapshot at once, and a snapshot older than `fresh` is recounted in a background thread
(one at a time per scope) while the old one is still served. A snapshot older than `stale_limit` is
not shown: the viewer waits for a fresh count. Written by hand because the needed behaviour
(stale-while-revalidate, single flight per key, an age shown to the user) is a few lines here and
cachetools' TTL caches block or drop instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

V = TypeVar("V")
log = logging.getLogger(__name__)
WAIT_S = 60.0  # how long a viewer waits for another's count of the same scope


@dataclass(frozen=True)
class Snapshot(Generic[V]):
    value: V
    taken_at: datetime  # when the count started: it reflects the data at least this recent
    took_s: float


class Snapshots(Generic[V]):
    """Per-key snapshots of `compute(key)`: fresh ones served, aging ones served while recounted."""

    def __init__(self, fresh_s: float = 30.0, stale_limit_s: float = 600.0, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fresh_s, self.stale_limit_s, self.max_keys = fresh_s, max(stale_limit_s, fresh_s), max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[Hashable, tuple[float, Snapshot[V]]] = {}
        self._counting: dict[Hashable, threading.Lock] = {}
        self._background: dict[Hashable, threading.Thread] = {}

    def get(self, key: Hashable, compute: Callable[[], V]) -> Snapshot[V]:
        with self._lock:
            held = self._held.get(key)
            counting = self._counting.setdefault(key, threading.Lock())
        if held is not None:
            age = self._clock() - held[0]
            if age < self.fresh_s:
                return held[1]
            if age < self.stale_limit_s:
                self._refresh_later(key, compute, counting)
                return held[1]
        # Single flight: concurrent first viewers share one count. A count stuck past WAIT_S (a
        # database lock, say) stops being waited for: the older snapshot is shown, or counted anew.
        if not counting.acquire(timeout=WAIT_S):
            return held[1] if held is not None else self._count(key, compute)
        try:
            with self._lock:
                again = self._held.get(key)
            if again is not None and again is not held:  # counted while this viewer waited
                return again[1]
            return self._count(key, compute)
        finally:
            counting.release()

    def _count(self, key: Hashable, compute: Callable[[], V]) -> Snapshot[V]:
        started, taken_at = self._clock(), datetime.now(UTC)
        value = compute()
        snap = Snapshot(value, taken_at, self._clock() - started)
        with self._lock:
            if len(self._held) >= self.max_keys and key not in self._held:
                oldest = min(self._held, key=lambda k: self._held[k][0])
                del self._held[oldest]
            self._held[key] = (started, snap)
        return snap

    def _refresh_later(self, key: Hashable, compute: Callable[[], V], counting: threading.Lock) -> None:
        def run() -> None:
            try:
                self._count(key, compute)
            except Exception:  # the older snapshot stays; the next viewer tries again
                log.exception("recounting the snapshot %r failed; the older one is still shown", key)
            finally:
                counting.release()
                with self._lock:
                    self._background.pop(key, None)

        if not counting.acquire(blocking=False):
            return  # already being counted
        thread = threading.Thread(target=run, name=f"snapshot-{key!r}"[:60], daemon=True)
        with self._lock:
            self._background[key] = thread
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the next viewer tries again
            counting.release()
            with self._lock:
                self._background.pop(key, None)

    def forget(self, key: Hashable | None = None) -> None:
        """Drop a scope's snapshot (or all): the next viewer waits for a fresh count."""
        with self._lock:
            if key is None:
                self._held.clear()
            else:
                self._held.pop(key, None)

    def settle(self, timeout_s: float = 30.0) -> None:
        """Wait for background counts to finish (tests, and a clean shutdown)."""
        with self._lock:
            threads = list(self._background.values())
        for thread in threads:
            thread.join(timeout_s)
