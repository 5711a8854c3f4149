"""The demo's live side: a broker, the simulated city as a separate process, and the connector.

The simulator is started as its own process (`python -m cityward.sim run`) and reached only
through the protocol: the broker, its HTTP devices' sockets and the files an installer would hand
over. The broker is amqtt in-process unless CITYWARD_MQTT_URL names a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cityward.adapters import embedded_broker
from cityward.adapters.mosquitto import BrokerAccount
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.entrypoints.cli.fleet import secret_box
from cityward.errors import CitywardError
from cityward.services import broker, credentials, ingestion, remediation
from cityward.services.connectivity import ConnectOptions, Connector

log = logging.getLogger("cityward.demo")


class LiveCityError(CitywardError):
    title = "Simulated city failed"


def _accounts(bundle: dict[str, Any], platform_password: str) -> list[BrokerAccount]:
    accounts = [BrokerAccount("cityward-platform", platform_password, "platform")]
    accounts += [BrokerAccount(d, v["password"], "device") for d, v in bundle["devices"].items()]
    accounts += [BrokerAccount(g, v["password"], "gateway", tuple(v["children"]))
                 for g, v in bundle["gateways"].items()]
    return accounts


class LiveCity:
    def __init__(self, platform: Platform, caller: Caller, devices: int, seed: int, workdir: Path) -> None:
        self.platform, self.caller, self.devices, self.seed, self.workdir = platform, caller, devices, seed, workdir
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self.broker_errors = 0
        self.thread = threading.Thread(target=self.loop.run_forever, name="cityward-live", daemon=True)
        self.sim: subprocess.Popen[str] | None = None
        self._sim_log: Any = None
        self.connector: Connector | None = None
        self._stop: asyncio.Event | None = None
        self._running: Any = None
        self._broker: Any = None
        self.url = ""
        self.up = devices  # the devices the simulator has up (its READY line): the ones that will report

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """amqtt 0.12 can fail a broadcast when a client subscribes while it iterates its
        subscriptions ("dictionary changed size during iteration"); that one message is lost and
        the device's next periodic state repairs it; and it gives up a QoS 1 delivery to a slow
        client after a PUBACK timeout. Count such failures instead of printing tracebacks over
        the demo's output; anything else goes to the default handler."""
        future = context.get("future")
        if future is not None and ("Broker." in repr(future) or "ProtocolHandler." in repr(future)):
            self.broker_errors += 1
            log.debug("embedded broker: %s", context.get("exception"))
            return
        loop.default_exception_handler(context)

    def _call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, status: Any = None) -> None:
        external = "mqtt_url" in self.platform.settings.model_fields_set or "CITYWARD_MQTT_URL" in os.environ
        box = secret_box(self.platform)
        say = status or (lambda _m: None)
        say("provisioning broker accounts…")
        report = broker.provision(self.platform.uow, self.caller, box, self.workdir / "broker",
                                  broker_url=self.platform.settings.mqtt_url, via_gateways=True)
        bundle = json.loads(Path(report.files["bundle"]).read_text())
        self.thread.start()
        if external:
            self.url = self.platform.settings.mqtt_url
        else:
            say("starting the embedded MQTT broker…")
            password = broker.platform_password(self.platform.uow, box)
            assert password is not None  # provision just stored it
            self._broker, self.url = self._call(embedded_broker.start(_accounts(bundle, password)))
        say("starting the simulated city (a separate process)…")
        handover = self.workdir / "handover.csv"
        self._sim_log = (self.workdir / "simulator.log").open("w")
        self.sim = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "cityward.sim", "run", "--devices", str(self.devices), "--seed", str(self.seed),
             "--mqtt-url", self.url, "--credentials", report.files["bundle"], "--mode", "gateway",
             "--handover", str(handover), "--state-interval", "60", "--time-scale", "0.03"],
            stdout=subprocess.PIPE, stderr=self._sim_log, text=True)
        ready = self._wait_ready(timeout=180)
        fields = dict(part.split("=", 1) for part in ready.split()[1:] if "=" in part)
        self.up = int(fields.get("mqtt", 0)) + int(fields.get("http", 0)) or self.devices
        say(f"simulator ready: {self.up:,} of {self.devices:,} devices up")
        with handover.open("rb") as fh:
            credentials.import_handover(self.platform.uow, self.caller, box, fh, "installer handover")
        self.connector = Connector(self.platform.uow, box, ConnectOptions(
            mqtt_url=self.url, poll_interval=30, sweep_interval=30))
        self._stop = asyncio.Event()
        stop = self._stop
        self._running = asyncio.run_coroutine_threadsafe(self.connector.run(stop), self.loop)

    def _wait_ready(self, timeout: float) -> str:
        assert self.sim is not None and self.sim.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self.sim is not None and self.sim.stdout is not None
            for line in self.sim.stdout:
                if line.startswith("READY"):
                    found.append(line.strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            tail = (self.workdir / "simulator.log").read_text()[-2000:]
            raise LiveCityError(f"the simulated city did not come up within {timeout:.0f} s. {tail}".strip())
        return found[0]

    def settle(self, expected: int | None = None, timeout: float = 180.0, stall: float = 15.0,
               progress: Any = None) -> dict[str, int]:
        """Wait until the devices the simulator has up (by default) reported, or the count has not
        moved for `stall` seconds. Devices playing the "offline" fault never come up, and the
        simulator says how many did: waiting for those out a stall window cost seconds each run.
        The stall window is long because on a busy machine the connector's batches can be seconds
        apart."""
        expected = self.up if expected is None else expected
        deadline = time.monotonic() + timeout
        last, moved_at = -1, time.monotonic()
        counts = ingestion.connectivity(self.platform.uow)
        while time.monotonic() < deadline:
            counts = ingestion.connectivity(self.platform.uow)
            seen = counts["online"] + counts["offline"]
            if progress:
                progress(seen)
            now = time.monotonic()
            if seen != last:
                last, moved_at = seen, now
            if seen >= expected or (seen and now - moved_at >= stall):
                break
            time.sleep(0.5)
        return counts

    def settle_changes(self, rollout_ids: list[int], timeout: float = 60.0, stall: float = 15.0,
                       progress: Any = None) -> remediation.Reported:
        """Wait until the devices the rollouts changed report their new state (MQTT devices say it
        on their own after a command; HTTP devices do not push, so they are polled again while some
        of them have not), or nothing moved for `stall` seconds (a device that failed to come back
        from its reboot never will)."""
        deadline = time.monotonic() + timeout
        last, moved_at, polled_at = -1, time.monotonic(), 0.0
        state = remediation.reported_changes(self.platform.uow, self.caller, rollout_ids)
        while time.monotonic() < deadline:
            state = remediation.reported_changes(self.platform.uow, self.caller, rollout_ids)
            if progress:
                progress(state.reported, state.changed)
            now = time.monotonic()
            if state.reported != last:
                last, moved_at = state.reported, now
            if state.waiting == 0 or now - moved_at >= stall:
                break
            if self.connector is not None and now - polled_at >= 2.0:
                self._call(self.connector.poll_http_once(), timeout=timeout)
                polled_at = time.monotonic()
                continue
            time.sleep(0.5)
        return state

    def stats(self) -> dict[str, Any]:
        stats = self.connector.stats() if self.connector else {}
        if self.broker_errors:
            stats["broker_broadcast_errors"] = self.broker_errors
        return stats

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            with contextlib.suppress(Exception):
                self._running.result(30)
        if self.sim is not None and self.sim.poll() is None:
            self.sim.terminate()
            try:
                self.sim.wait(15)
            except subprocess.TimeoutExpired:
                self.sim.kill()
        if self._broker is not None:
            with contextlib.suppress(Exception):
                self._call(self._broker.shutdown(), timeout=15)
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if self._sim_log is not None:
            self._sim_log.close()
