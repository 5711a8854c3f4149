"""Shared helpers of the simulator tests: devices from the demo city, commands, a running simulator."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cityward.sim.city import generate_city, iter_device_rows
from cityward.sim.device import Device, build_device
from cityward.sim.profile import Profile, load_profile

ANCHOR = datetime(2025, 6, 30, tzinfo=UTC)
BROKER = ("127.0.0.1", 1883)


def rows(devices: int, seed: int, id_prefix: str = "", profile: Profile | None = None) -> list[dict[str, str]]:
    return list(iter_device_rows(generate_city(devices, seed, profile), seed, id_prefix=id_prefix))


def device_of(row: dict[str, str], seed: int, id_prefix: str = "", profile: Profile | None = None) -> Device:
    return build_device(row, seed=seed, profile=profile or load_profile(), anchor=ANCHOR,
                        base_id=row["id"][len(id_prefix):])


def command(action: str, params: dict[str, Any] | None = None, *, command_id: str | None = None,
            expires_in: float = 3600, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {"v": 1, "command_id": command_id or str(uuid.uuid4()), "action": action,
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires_at": (now + timedelta(seconds=expires_in)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "params": params or {}}


def require_broker() -> None:
    """The real Mosquitto is required: fail (never skip) when it cannot be reached."""
    try:
        socket.create_connection(BROKER, timeout=3).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto is required at {BROKER[0]}:{BROKER[1]} and cannot be reached ({exc}). "
                    "Start it with: mosquitto -d -c /etc/mosquitto/mosquitto.conf", pytrace=False)


def unique_prefix() -> str:
    """Device ids of one test run: parallel tests (xdist) and runs never share a device id."""
    return f"t{uuid.uuid4().hex[:8]}-"


@dataclass
class RunningSim:
    process: subprocess.Popen[str]
    control: str
    ready: dict[str, str]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.control}{path}", timeout=5) as response:
            return json.loads(response.read())

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self.get(f"/sim/devices/{device_id}"))


@contextmanager
def simulator(*args: str, timeout: float = 60.0) -> Iterator[RunningSim]:
    """Run `python -m cityward.sim run ARGS` until its READY line; kill it (SIGKILL) at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "cityward.sim", "run", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            ready, _w, _x = select.select([process.stdout], [], [], 0.2)
            if ready:
                line = process.stdout.readline()
                if line.startswith("READY") or not line:
                    break
            if process.poll() is not None:
                break
        if not line.startswith("READY"):
            process.kill()
            _out, err = process.communicate(timeout=5)
            pytest.fail(f"simulator not ready (exit {process.returncode}): {line!r} {err[-2000:]}")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        yield RunningSim(process, fields["control"], fields)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
