"""End to end over the real Mosquitto: `python -m cityward.sim run` as a subprocess, observed as the
platform would observe it. Each test uses its own `--id-prefix`, so parallel tests never share a
device id (and therefore never a client id or a topic)."""

from __future__ import annotations

import hashlib
import http.server
import json
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cityward.sim.keys import sign_firmware
from cityward.sim.profile import DEFAULT_PROFILE
from tests.sim.helpers import command, device_of, require_broker, rows, simulator, unique_prefix

SEED = 31


class Watcher:
    """A platform-like subscriber that records every message on some devices' topics."""

    def __init__(self, device_ids: list[str]) -> None:
        self.messages: list[tuple[str, str, dict[str, Any], bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        for device_id in device_ids:
            self.client.subscribe(f"cityward/v1/{device_id}/#", qos=1)
        time.sleep(0.3)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        _a, _b, device_id, suffix = message.topic.split("/")
        with self.lock:
            self.messages.append((device_id, suffix, json.loads(message.payload), bool(message.retain)))

    def send(self, device_id: str, payload: dict[str, Any]) -> None:
        self.client.publish(f"cityward/v1/{device_id}/cmd", json.dumps(payload), qos=1).wait_for_publish(5)

    def wait(self, what: Callable[[str, str, dict[str, Any]], bool], timeout: float = 15.0,
             count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [p for d, s, p, _r in self.messages if what(d, s, p)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out; saw {[(d, s, p.get('status')) for d, s, p, _r in self.messages][-30:]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def watcher_factory() -> Iterator[Callable[[list[str]], Watcher]]:
    require_broker()
    made: list[Watcher] = []

    def make(ids: list[str]) -> Watcher:
        made.append(Watcher(ids))
        return made[-1]

    yield make
    for w in made:
        w.close()


@pytest.fixture
def firmware_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_args: object) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()


def _healthy_mqtt(prefix: str, count: int) -> list[dict[str, str]]:
    return [r for r in rows(count, SEED, prefix)
            if r["protocol"] != "http" and device_of(r, SEED, prefix).fault is None]


def test_devices_announce_take_commands_once_and_leave_a_will(
        watcher_factory: Callable[[list[str]], Watcher], firmware_server: tuple[str, dict[str, bytes]]) -> None:
    prefix = unique_prefix()
    row = _healthy_mqtt(prefix, 30)[0]
    target = row["id"]
    watch = watcher_factory([target])
    with simulator("--devices", "30", "--seed", str(SEED), "--id-prefix", prefix, "--no-http",
                   "--time-scale", "0.01", "--state-interval", "1") as sim:
        assert int(sim.ready["devices"]) == int(sim.ready["mqtt"]) + sum(
            1 for r in rows(30, SEED, prefix) if r["protocol"] != "http" and device_of(r, SEED, prefix).fault
            == "offline")
        hello = watch.wait(lambda d, s, p: s == "hello")[0]
        for field in ("brand", "model", "serial", "mac", "firmware_version", "kind"):
            assert hello[field] == row[field]
        assert watch.wait(lambda d, s, p: s == "status")[0]["status"] == "online"
        states = watch.wait(lambda d, s, p: s == "state", count=2)  # on connect, then periodic
        assert states[1]["seq"] == states[0]["seq"] + 1 and states[0]["device_id"] == target

        cmd = command("set_password", {"password": "correct-horse-battery"})
        watch.send(target, cmd)
        done = watch.wait(lambda d, s, p: s == "result" and p["status"] == "succeeded")
        assert done[0]["command_id"] == cmd["command_id"] and done[0]["repeat"] is False
        watch.send(target, cmd)  # the platform retries: answered from the store, not applied again
        repeat = watch.wait(lambda d, s, p: s == "result" and p.get("repeat") is True)[0]
        assert repeat["status"] == "succeeded" and repeat["command_id"] == cmd["command_id"]
        statuses = [p["status"] for d, s, p, _r in watch.messages if s == "result"]
        assert statuses[0] == "accepted" and statuses.count("succeeded") == 2
        view = sim.device(target)
        assert view["applied_commands"] == 1 and view["applied"] == {cmd["command_id"]: 1}
        assert view["credential_state"] == "unique"
        assert watch.wait(lambda d, s, p: s == "state" and p["credential"]["state"] == "unique")

        # a signed image over HTTP GET: downloaded, verified, installed, rebooted into
        base, files = firmware_server
        image = b"simulated firmware image " * 400
        maker_brand, maker_model = view_maker(target, prefix)
        digest, signature, kid = sign_firmware(maker_brand, maker_model, "99.1.0", image, SEED)
        files["/fw.bin"] = image
        upgrade = command("upgrade_firmware", {"url": f"{base}/fw.bin", "version": "99.1.0", "size": len(image),
                                               "sha256": digest, "signature": signature, "key_id": kid})
        watch.send(target, upgrade)
        final = watch.wait(lambda d, s, p: s == "result" and p["command_id"] == upgrade["command_id"]
                           and p["status"] in ("succeeded", "failed", "rejected"), timeout=20)[0]
        assert final["status"] == "succeeded", final
        progress = [p["progress"] for d, s, p, _r in watch.messages
                    if s == "result" and p["command_id"] == upgrade["command_id"] and "progress" in p]
        assert progress == sorted(progress) and progress[-1] == 100
        assert watch.wait(lambda d, s, p: s == "state" and p["firmware_version"] == "99.1.0")
        assert sim.device(target)["firmware_version"] == "99.1.0"

        stats = sim.get("/sim/stats")
        assert stats["commands_repeated"] == 1 and stats["messages_published"] > 0
        sim.process.kill()  # an abrupt end: the broker publishes every device's last will
        will = watch.wait(lambda d, s, p: s == "status" and p["status"] == "offline")[0]
        assert will["v"] == 1


def view_maker(device_id: str, prefix: str) -> tuple[str, str]:
    row = next(r for r in rows(30, SEED, prefix) if r["id"] == device_id)
    return device_of(row, SEED, prefix).maker


def test_expired_and_tampered_commands_over_mqtt(watcher_factory: Callable[[list[str]], Watcher],
                                                 firmware_server: tuple[str, dict[str, bytes]]) -> None:
    prefix = unique_prefix()
    row = _healthy_mqtt(prefix, 20)[0]
    target = row["id"]
    watch = watcher_factory([target])
    with simulator("--devices", "20", "--seed", str(SEED), "--id-prefix", prefix, "--no-http", "--only", target,
                   "--time-scale", "0.01") as sim:
        assert sim.ready["devices"] == "1"
        expired = command("reboot", expires_in=-60)
        watch.send(target, expired)
        result = watch.wait(lambda d, s, p: s == "result" and p["command_id"] == expired["command_id"])[0]
        assert (result["status"], result["detail"]) == ("rejected", "expired")

        base, files = firmware_server
        image = b"another image" * 100
        maker = device_of(row, SEED, prefix).maker
        digest, signature, kid = sign_firmware(*maker, "7.7.7", image, SEED)
        files["/tampered.bin"] = image[:-1] + b"X"
        bad = command("upgrade_firmware", {"url": f"{base}/tampered.bin", "version": "7.7.7", "size": len(image),
                                           "sha256": digest, "signature": signature, "key_id": kid})
        watch.send(target, bad)
        refused = watch.wait(lambda d, s, p: s == "result" and p["command_id"] == bad["command_id"]
                             and p["status"] == "rejected")[0]
        assert refused["detail"] == "hash mismatch"
        assert sim.device(target)["firmware_version"] == row["firmware_version"]
        assert sim.device(target)["applied_commands"] == 0


def _profile_with(tmp_path: Path, **faults: float) -> Path:
    data = yaml.safe_load(DEFAULT_PROFILE.read_text())
    data["faults"] = {"offline": 0, "flaky": 0, "slow": 0, "upgrade_fails": 0, "upgrade_bricks": 0, **faults}
    data["timing"].update(flaky_up=[0.5, 1.0], flaky_down=[0.3, 0.5], reboot=0.2, command_delay=0.05)
    path = tmp_path / "flaky.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_flaky_device_drops_will_fires_and_it_comes_back(
        tmp_path: Path, watcher_factory: Callable[[list[str]], Watcher]) -> None:
    prefix = unique_prefix()
    target = next(r["id"] for r in rows(10, SEED, prefix) if r["protocol"] != "http")
    watch = watcher_factory([target])
    with simulator("--devices", "10", "--seed", str(SEED), "--id-prefix", prefix, "--no-http",
                   "--only", target, "--profile", str(_profile_with(tmp_path, flaky=1.0))) as sim:
        watch.wait(lambda d, s, p: s == "status" and p["status"] == "offline", timeout=10)
        watch.wait(lambda d, s, p: s == "hello", count=2, timeout=10)
        assert sim.get("/sim/stats")["flaky_drops"] >= 1


def test_gateway_speaks_for_its_children(tmp_path: Path, watcher_factory: Callable[[list[str]], Watcher]) -> None:
    prefix = unique_prefix()
    city = [r for r in rows(40, SEED, prefix) if r["protocol"] != "http"]
    gateway = next(r["id"] for r in city if r["kind"] == "gateway")
    children = [r["id"] for r in city if r["kind"] != "gateway"][:3]
    stranger = [r["id"] for r in city if r["kind"] != "gateway"][3]  # no account in the bundle
    bundle = {"v": 1, "broker": "mqtt://127.0.0.1:1883",
              "devices": {i: {"username": i, "password": hashlib.sha256(i.encode()).hexdigest()[:32]}
                          for i in [gateway, *children]},
              "gateways": {gateway: {"username": gateway, "password": "g" * 32, "children": children}}}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    watch = watcher_factory([gateway, *children])
    profile = _profile_with(tmp_path, flaky=1.0)
    with simulator("--devices", "40", "--seed", str(SEED), "--id-prefix", prefix, "--mode", "gateway",
                   "--credentials", str(path), "--only", ",".join([gateway, *children, stranger]), "--profile",
                   str(profile)) as sim:
        stats = sim.get("/sim/stats")
        assert stats["links"] == 1  # one connection for the gateway and its children
        assert stats["unreachable"] == {"no broker account": 1} and sim.device(stranger)["online"] is False
        for child in children:
            watch.wait(lambda d, s, p, c=child: bool(d == c and s == "hello"))  # type: ignore[misc]
        # a child dropping off the gateway: the gateway publishes the child's status offline, then it returns
        watch.wait(lambda d, s, p: d in children and s == "status" and p["status"] == "offline", timeout=10)
        cmd = command("reboot")
        watch.send(children[0], cmd)
        watch.wait(lambda d, s, p: d == children[0] and s == "result" and p["command_id"] == cmd["command_id"]
                   and p["status"] in ("succeeded", "rejected", "failed"), timeout=20)


def test_upgrade_faults_fail_or_brick(tmp_path: Path, watcher_factory: Callable[[list[str]], Watcher],
                                      firmware_server: tuple[str, dict[str, bytes]]) -> None:
    from cityward.sim.profile import load_profile

    prefix = unique_prefix()
    path = _profile_with(tmp_path, upgrade_fails=0.5, upgrade_bricks=0.5)
    profile = load_profile(path)
    city = [r for r in rows(40, SEED, prefix, profile) if r["protocol"] != "http"]
    fails = next(r for r in city if device_of(r, SEED, prefix, profile).fault == "upgrade_fails")
    bricks = next(r for r in city if device_of(r, SEED, prefix, profile).fault == "upgrade_bricks")
    watch = watcher_factory([fails["id"], bricks["id"]])
    base, files = firmware_server
    image = b"fw" * 500
    files["/fw.bin"] = image
    with simulator("--devices", "40", "--seed", str(SEED), "--id-prefix", prefix, "--profile", str(path),
                   "--only", f"{fails['id']},{bricks['id']}", "--time-scale", "0.01") as sim:
        sent = {}
        for row in (fails, bricks):
            maker = device_of(row, SEED, prefix, profile).maker
            digest, signature, kid = sign_firmware(*maker, "50.0.0", image, SEED)
            sent[row["id"]] = command("upgrade_firmware", {"url": f"{base}/fw.bin", "version": "50.0.0",
                                                           "size": len(image), "sha256": digest,
                                                           "signature": signature, "key_id": kid})
            watch.send(row["id"], sent[row["id"]])
        failed = watch.wait(lambda d, s, p: d == fails["id"] and s == "result" and p["status"] == "failed")[0]
        assert failed["detail"].startswith("install failed")
        # the bricked device vanishes mid-install: its will fires and it never answers again
        watch.wait(lambda d, s, p: d == bricks["id"] and s == "status" and p["status"] == "offline")
        view = sim.device(bricks["id"])
        assert view["bricked"] is True and view["online"] is False and view["firmware_version"] == bricks[
            "firmware_version"]
        assert not [p for d, s, p, _r in watch.messages
                    if d == bricks["id"] and s == "result" and p["status"] in ("succeeded", "failed", "rejected")]
        assert sim.device(fails["id"])["firmware_version"] == fails["firmware_version"]
