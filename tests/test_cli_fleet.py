"""CLI stories of device connectivity, each a real `cityward` subprocess against the simulated city:
the installer's files in, a probe of the street finds a device nobody entered, a person approves
it, the connector polls the HTTP devices, a command goes out and comes back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.sim.helpers import simulator, unique_prefix
from tests.test_cli import Cli

SEED = 5


def test_http_fleet_story(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("init", "--city", "Port Aurelia")
    prefix = unique_prefix()
    files = tmp_path / "files"
    handover = tmp_path / "handover.csv"
    cli("sim", "inventory", "--out", str(files), "--devices", "40", "--seed", str(SEED), "--id-prefix", prefix)
    with (files / "devices.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    cameras = [r for r in rows if r["kind"] == "camera" and r["protocol"] == "http"]
    assert len(cameras) >= 3
    stranger = cameras[-1]  # installed in the street, never entered into the inventory
    with (files / "devices.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(r for r in rows if r is not stranger)
    cli("products", "import", str(files / "catalog.csv"))
    cli("orgs", "import", str(files / "organizations.csv"))  # kinds stated, never guessed by an import
    cli("devices", "import", str(files / "devices.csv"), "--create-missing")

    with simulator("--devices", "40", "--seed", str(SEED), "--id-prefix", prefix, "--kinds", "camera",
                   "--handover", str(handover), "--time-scale", "0.05",
                   "--mqtt-url", "mqtt://127.0.0.1:1883"):
        # The handover names the stranger too: the whole file is refused, naming it.
        refused = cli("credentials", "import", str(handover), code=2)
        assert stranger["id"] in refused.stderr or "not in the inventory" in refused.stderr
        lines = [line for line in handover.read_text().splitlines() if stranger["id"] not in line]
        (tmp_path / "ours.csv").write_text("\n".join(lines) + "\n")
        assert "stored admin credentials of" in cli("credentials", "import", str(tmp_path / "ours.csv")).stdout

        host = stranger["address"].split(":")[0]
        report = json.loads(cli("discover", "--http-range", f"{host}-{host}", "--json").stdout)
        assert report["discovered"] == [stranger["id"]] and report["answered"] == 1
        pending = json.loads(cli("discover", "pending", "--json").stdout)
        assert [p["device_id"] for p in pending] == [stranger["id"]]
        cli("discover", "approve", stranger["id"], "--zone", "Nowhere", code=2)  # no such zone: nothing changes
        cli("discover", "approve", stranger["id"], "--zone", stranger["zone"])
        assert json.loads(cli("discover", "pending", "--json").stdout) == []

        stats = json.loads(cli("connect", "--no-mqtt", "--duration", "2", "--json").stdout)
        assert stats["http"]["polled"] >= len(cameras) - 2 and not stats["rejected"]
        online = json.loads(cli("devices", "list", "--online", "--kind", "camera", "--json").stdout)["items"]
        assert {d["id"] for d in online} >= {cameras[0]["id"]}

        done = cli("devices", "command", cameras[0]["id"], "reboot", "--json", "--timeout", "20")
        assert json.loads(done.stdout)["status"] == "succeeded"
        cli("devices", "command", cameras[0]["id"], "explode", code=2)
        assert "devices.command" in cli("auditlog", "list", "--json").stdout


@pytest.mark.parametrize("args, needle", [
    (["discover"], "--http-range"),
    (["discover", "--http-range", "10.0.0.9-10.0.0.1"], "after the start"),
    (["discover", "--http-range", "10.0.0.0/8"], "at most"),
    (["credentials", "import", "missing.csv"], "cannot read"),
    (["devices", "command", "NOPE-1", "reboot"], "not found"),
])
def test_bad_fleet_commands_say_what_is_wrong(tmp_path: Path, args: list[str], needle: str) -> None:
    cli = Cli(tmp_path)
    cli("init", "--city", "Port Aurelia")
    proc = cli(*args, code=2)
    assert needle in proc.stderr, proc.stderr
