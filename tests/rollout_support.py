"""Carrying a stored rollout to its end without devices: the real executor claims and closes
waves, and each claimed action is answered as a device would (succeeded, or failed for the named
devices)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import IO

import pytest

from cityward.adapters.secretbox import SecretBox
from cityward.bootstrap import Platform
from cityward.services.rollout_executor import Executor, ExecutorOptions


def offline_executor(platform: Platform, store: Path) -> Executor:
    key = platform.settings.secret_key_bytes()
    return Executor(platform.uow, SecretBox(key), key, ExecutorOptions(mqtt_url=None, firmware_store=store))


def finish_rollout(platform: Platform, rollout_id: int, store: Path, failing: frozenset[str] = frozenset(),
                   rounds: int = 50) -> None:
    """Tick until the rollout has no work left (its waves closed by the executor itself)."""
    executor = offline_executor(platform, store)
    for _ in range(rounds):
        claimed, busy = executor.claim_all()
        for d in executor.build_many(claimed):
            failed = d.device_id in failing
            executor._finish(d, "failed" if failed else "succeeded", "timeout: no answer" if failed else None)
        if rollout_id not in busy and not claimed:
            return
    raise AssertionError(f"rollout {rollout_id} still has work after {rounds} rounds")


def stop_workers(workers: dict[str, subprocess.Popen[str]], logs: dict[str, IO[str]]) -> None:
    """SIGTERM every `cityward worker` still running, wait for each (a worker that does not stop
    fails the test) and close its log."""
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in workers.items():
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"worker {name} did not stop on SIGTERM")
        logs[name].close()
