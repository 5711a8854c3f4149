"""Test support: a private Mosquitto on a free port, configured from cityward's broker files.

Never skipped: without the `mosquitto` binary the test fails and says how to install it.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cityward.adapters.mosquitto import BrokerAccount, BrokerFiles, write_broker_files

START_TIMEOUT_S = 10.0
_HOST = "127.0.0.1"


@dataclass(frozen=True)
class BrokerInfo:
    host: str
    port: int
    url: str
    files: BrokerFiles
    log: Path
    pid: int  # send SIGHUP to make it re-read rewritten passwd/acl files


def mosquitto_binary() -> str:
    """Path of the broker binary, or fail the test with how to get it."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        pytest.fail(
            "the mosquitto broker binary is required (not on PATH nor /usr/sbin/mosquitto); "
            "install Debian's mosquitto package: apt-get install mosquitto mosquitto-clients",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _start(binary: str, files: BrokerFiles, port: int, log: Path) -> subprocess.Popen[bytes] | None:
    """Start the broker; None if it lost the race for the port (caller retries on another)."""
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-c", str(files.config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if "Address already in use" in _tail(log):
                return None
            pytest.fail(
                f"{binary} -c {files.config} exited with status {proc.returncode} before listening on "
                f"port {port}; log tail:\n{_tail(log)}",
                pytrace=False,
            )
        if _accepts(port):
            return proc
        time.sleep(0.05)
    _stop(proc)
    pytest.fail(
        f"{binary} did not accept connections on {_HOST}:{port} within {START_TIMEOUT_S:.0f} s; "
        f"log tail:\n{_tail(log)}",
        pytrace=False,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def private_mosquitto(tmp_path: Path, accounts: Iterable[BrokerAccount]) -> Iterator[BrokerInfo]:
    """Run a Mosquitto that knows only `accounts` (files under tmp_path/mosquitto) for the block."""
    binary = mosquitto_binary()
    accounts = tuple(accounts)
    directory = tmp_path / "mosquitto"
    log = directory / "mosquitto.log"
    # As root, Mosquitto drops to the `mosquitto` user before reading the 0600 password file,
    # which root owns in a 0700 tmp dir: keep it root for tests.
    user = "root" if os.geteuid() == 0 else None
    for _attempt in range(5):
        port = free_port()
        files = write_broker_files(directory, accounts, port=port, user=user)
        proc = _start(binary, files, port, log)
        if proc is not None:
            break
    else:
        pytest.fail(f"{binary}: no free port after 5 attempts; log tail:\n{_tail(log)}", pytrace=False)
    try:
        yield BrokerInfo(host=_HOST, port=port, url=f"mqtt://{_HOST}:{port}", files=files, log=log, pid=proc.pid)
    finally:
        _stop(proc)


class BrokerOutage:
    """`kill -9` a private Mosquitto, then start it again on the same port and files, as an
    operator's restart (or a crash and its supervisor) would: with `persistence false` every
    session, subscription, retained message and queued command is gone."""

    def __init__(self, broker: BrokerInfo) -> None:
        self.broker = broker
        self.pid = broker.pid
        self.proc: subprocess.Popen[bytes] | None = None
        self.strikes = 0

    def strike(self, down_s: float) -> float:
        """Kill the broker, wait `down_s`, start it again; returns the seconds it accepted no
        connections. Blocking: call it from a thread (asyncio.to_thread) beside async code."""
        os.kill(self.pid, signal.SIGKILL)
        killed = time.monotonic()
        if self.proc is not None:
            self.proc.wait(5)  # (the first broker is private_mosquitto's child: it reaps it)
        time.sleep(down_s)
        with self.broker.log.open("ab") as out:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.broker.files.config)], stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.broker.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the restarted broker did not listen on {self.broker.port}: "
                                     f"{_tail(self.broker.log)}")
            time.sleep(0.02)
        self.pid = self.proc.pid
        self.strikes += 1
        return time.monotonic() - killed

    def __enter__(self) -> BrokerOutage:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes


class MqttProbe:
    """A blocking paho client for tests: connect, subscribe, publish, and wait for what arrives.

    Every wait is bounded; "nothing arrived" is proven with a sentinel (Mosquitto delivers one
    publisher's messages to one subscriber in order), not with a long sleep.
    """

    def __init__(self, broker: BrokerInfo, username: str, password: str, *, v5: bool = False) -> None:
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.username = username
        self.messages: queue.Queue[Received] = queue.Queue()
        self._broker = broker
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._acks: dict[int, list[ReasonCode]] = {}
        self._acked = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{username}-{uuid.uuid4().hex[:8]}", protocol=protocol
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    # paho callbacks (VERSION2 signatures)
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            client.disconnect()  # else paho's loop sleeps a second and retries
        self._connack.put(reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(message.topic, bytes(message.payload)))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self._ack(mid, list(reasons))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._ack(mid, [reason])

    def _ack(self, mid: int, reasons: list[ReasonCode]) -> None:
        with self._acked:
            self._acks[mid] = reasons
            self._acked.notify_all()

    def _wait_ack(self, mid: int, what: str, timeout: float = 5.0) -> list[ReasonCode]:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, timeout):
                raise AssertionError(f"{self.username}: no ack for {what} within {timeout} s")
            return self._acks.pop(mid)

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        """Connect and return the CONNACK reason; a refused client is stopped (paho would retry)."""
        self.client.connect(self._broker.host, self._broker.port, keepalive=10)
        self.client.loop_start()
        try:
            reason = self._connack.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise AssertionError(f"{self.username}: no CONNACK within {timeout} s") from None
        if reason.is_failure:
            self.close()
        return reason

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        result, mid = self.client.subscribe([(topic, 1) for topic in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS, f"{self.username}: subscribe failed locally ({result})"
        assert mid is not None
        return self._wait_ack(mid, f"subscribe {topics}")

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK reason (always Success under MQTT 3.1.1)."""
        info = self.client.publish(topic, payload, qos=1)
        return self._wait_ack(info.mid, f"publish {topic}")[0]

    def collect_until(self, topic: str, payload: bytes, timeout: float = 5.0) -> list[Received]:
        """Everything received up to and including (topic, payload); fail if it does not come."""
        return self.collect_all({Received(topic, payload)}, timeout)

    def collect_all(self, expected: set[Received], timeout: float = 5.0) -> list[Received]:
        """Everything received until each of `expected` has arrived; fail if one does not come."""
        got: list[Received] = []
        missing = set(expected)
        deadline = time.monotonic() + timeout
        while missing:
            try:
                item = self.messages.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"{self.username} did not receive {sorted(missing, key=repr)} within {timeout} s; got {got}"
                ) from None
            got.append(item)
            missing.discard(item)
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def connected(broker: BrokerInfo, username: str, password: str, *, v5: bool = False) -> Iterator[MqttProbe]:
    """A connected MqttProbe for the block; fails the test if the broker refuses the login."""
    probe = MqttProbe(broker, username, password, v5=v5)
    reason = probe.connect()
    assert not reason.is_failure, f"{username} refused at connect: {reason}"
    try:
        yield probe
    finally:
        probe.close()
