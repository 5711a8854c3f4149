"""An MQTT device written from docs/protocol.md alone (§1, §2): Python's standard library driving
the Mosquitto command-line clients (`mosquitto_pub`, `mosquitto_sub`). It imports nothing of
cityward (checked by tests/conformance/test_conformance.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from typing import Any


def now(ahead: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + ahead).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MqttDevice:
    """One device: its own broker account (username = device id), QoS 1, `state` retained, a last
    will on `status`, and commands applied at most once per `command_id` (repeats answered from
    the store with `"repeat": true`)."""

    def __init__(self, host: str, port: int, device_id: str, password: str, *, serial: str = "S1",
                 mac: str = "02:00:00:00:00:01", firmware: str = "1.2.3") -> None:
        pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
        if not pub or not sub:
            raise RuntimeError("mosquitto_pub/mosquitto_sub are required (apt-get install mosquitto-clients)")
        self.pub, self.sub = pub, sub
        self.host, self.port, self.id, self.password = host, port, device_id, password
        self.serial, self.mac, self.firmware = serial, mac, firmware
        self.boot, self.seq = 1, 0
        self.results: dict[str, dict[str, Any]] = {}
        self.applied_commands = 0
        self.received: list[str] = []
        self._listener: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def _auth(self, client_id: str) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-u", self.id, "-P", self.password, "-i", client_id,
                "-q", "1", "-V", "mqttv311"]

    def publish(self, channel: str, body: dict[str, Any], *, retain: bool = False) -> None:
        args = [self.pub, *self._auth(f"{self.id}-pub"), "-t", f"cityward/v1/{self.id}/{channel}",
                "-m", json.dumps(body)] + (["-r"] if retain else [])
        subprocess.run(args, check=True, capture_output=True, timeout=10)

    # --- §2 payloads -----------------------------------------------------------------------------

    def hello(self, **over: Any) -> dict[str, Any]:
        return {"v": 1, "device_id": self.id, "kind": "streetlight", "brand": "Lumo", "model": "L100",
                "serial": self.serial, "mac": self.mac, "firmware_version": self.firmware, "protocols": ["mqtt"],
                "actions": ["reboot"], "rollback": False, "at": now(), **over}

    def state(self, *, ahead: timedelta = timedelta(0), **over: Any) -> dict[str, Any]:
        self.seq += 1
        return {"v": 1, "device_id": self.id, "seq": self.seq, "boot_id": f"boot-{self.boot}", "at": now(ahead),
                "firmware_version": self.firmware, "uptime_s": 5, "services": ["mqtt"], "remote_access": [],
                "credential": {"state": "unique", "changed_at": None}, "certificates": [], "config_hash": None,
                "quarantined": False, "applied_commands": self.applied_commands, **over}

    def connect(self) -> None:
        """Subscribe to `cmd` holding the last will, then say `status` online, `hello` and `state`
        (§2: on every connect)."""
        will = json.dumps({"v": 1, "status": "offline", "at": now()})
        self._listener = subprocess.Popen(
            [self.sub, *self._auth(self.id), "-c", "-t", f"cityward/v1/{self.id}/cmd", "--will-topic",
             f"cityward/v1/{self.id}/status", "--will-payload", will, "--will-qos", "1", "--will-retain",
             "-k", "5"], stdout=subprocess.PIPE)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.publish("status", {"v": 1, "status": "online", "at": now()}, retain=True)
        self.publish("hello", self.hello())
        self.publish("state", self.state(), retain=True)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.kill()
            self._listener.wait(10)

    # --- §1 commands -----------------------------------------------------------------------------

    def _result(self, command_id: str, status: str, detail: str | None = None) -> dict[str, Any]:
        return {"v": 1, "device_id": self.id, "command_id": command_id, "status": status,
                "progress": 100 if status == "succeeded" else None, "detail": detail, "at": now(), "repeat": False}

    def _serve(self) -> None:
        assert self._listener is not None and self._listener.stdout is not None
        for line in self._listener.stdout:
            try:
                command = json.loads(line)
            except ValueError:
                continue
            command_id = command.get("command_id")
            if not isinstance(command_id, str):
                continue
            self.received.append(command_id)
            if command_id in self.results:
                self.publish("result", {**self.results[command_id], "repeat": True, "at": now()})
                continue
            if command.get("expires_at", "9") < now():
                self.results[command_id] = self._result(command_id, "rejected", "expired")
            elif command.get("action") != "reboot":
                self.results[command_id] = self._result(command_id, "rejected", "unknown action")
            else:
                self.publish("result", self._result(command_id, "accepted"))
                self.boot, self.seq = self.boot + 1, 0  # the restart: a new boot, seq from the start
                self.applied_commands += 1
                self.results[command_id] = self._result(command_id, "succeeded", "rebooted")
                self.publish("state", self.state(), retain=True)  # §1: state again after the restart
            self.publish("result", self.results[command_id])
