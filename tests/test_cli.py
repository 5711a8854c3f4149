"""End-to-end CLI stories: the real `cityward` command in a subprocess, on a fresh SQLite file."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.bootstrap import bootstrap
from cityward.config import load_settings
from cityward.services import executors, users
from tests.helpers import csv_bytes, device

CLI = [sys.executable, "-m", "cityward.entrypoints.cli.main"]


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWARD_")}
        self.env["CITYWARD_DATABASE_URL"] = f"sqlite:///{home / 'cityward.db'}"
        self.env["COLUMNS"] = "200"

    def __call__(self, *args: str, code: int = 0, token: str | None = None,
                 stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **({"CITYWARD_TOKEN": token} if token else {}))
        proc = subprocess.run([*CLI, *args], cwd=self.home, env=env, capture_output=True,
                              input=stdin.decode() if stdin else None, text=True, timeout=300)
        assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        return proc


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    run = Cli(tmp_path)
    run("init", "--city", "Springfield")
    return run


def test_init_prints_token_once_and_keeps_the_key_private(tmp_path: Path) -> None:
    run = Cli(tmp_path)
    out = run("init", "--city", "Springfield").stdout
    assert "cw_" in out
    key = tmp_path / "cityward.secret"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = run("init", "--city", "Other", code=1)
    assert "already initialized" in again.stderr
    assert "cw_" not in run("tokens", "list").stdout


def test_init_creates_the_first_admin_user_with_a_password_shown_once(tmp_path: Path) -> None:
    run = Cli(tmp_path)
    out = run("init", "--city", "Springfield", "--admin", "mayor.office").stdout
    password = out.strip().splitlines()[-1]
    assert "mayor.office" in out and len(password) >= 20
    listed = run("users", "list", "--json").stdout
    assert "mayor.office" in listed and password not in listed
    plat = bootstrap(load_settings(database_url=f"sqlite:///{tmp_path / 'cityward.db'}",
                                   secret_key_file=tmp_path / "cityward.secret"))
    try:
        assert users.sign_in(UnitOfWorkFactory(plat.engine), "mayor.office", password).caller.is_city_admin
    finally:
        plat.close()


def test_users_story(cli: Cli) -> None:
    cli("orgs", "add", "Alpha", "--kind", "integrator")
    made = json.loads(cli("users", "create", "alpha.tech", "--org", "Alpha", "--role", "operator", "--json").stdout)
    assert made["username"] == "alpha.tech" and len(made["password"]) >= 20
    chosen = secrets.token_urlsafe(16)
    out = cli("users", "passwd", "alpha.tech", "--password-stdin", stdin=f"{chosen}\n".encode()).stdout
    assert "password set" in out and chosen not in out
    short = cli("users", "passwd", "alpha.tech", "--password-stdin", stdin=b"short\n", code=2)
    assert "at least 12 characters" in short.stderr
    cli("users", "create", "Bad Name", code=2)
    cli("users", "disable", "alpha.tech")
    listed = {u["username"]: u for u in json.loads(cli("users", "list", "--json").stdout)}
    assert listed["alpha.tech"]["disabled"] is True and listed["admin"]["disabled"] is False
    cli("users", "disable", "nobody", code=2)  # an unknown name: the caller's mistake


def test_inventory_story(cli: Cli) -> None:
    cli("zones", "add", "downtown", "--criticality", "high")
    cli("orgs", "add", "Alpha", "--kind", "integrator")
    cli("zones", "assign", "downtown", "--duty", "maintain", "--org", "Alpha")
    (cli.home / "fleet.csv").write_bytes(csv_bytes(device(i) for i in range(30)))
    assert "30 new" in cli("devices", "import", "fleet.csv").stdout
    listed = json.loads(cli("devices", "list", "--json", "--limit", "10").stdout)
    assert listed["total"] == 30 and len(listed["items"]) == 10 and listed["next_after"] == "SL-00009"
    assert listed["items"][0]["responsible"]["maintain"] == "Alpha"
    shown = json.loads(cli("devices", "show", "SL-00003", "--json").stdout)
    assert shown["mac"] == "02:00:00:00:00:03"
    cli("devices", "export", "out.json")
    exported = json.loads((cli.home / "out.json").read_text())
    assert [d["id"] for d in exported] == [f"SL-{i:05d}" for i in range(30)]
    assert "updated" in cli("devices", "import", "out.json").stdout
    verify = cli("auditlog", "verify", "--json")
    assert json.loads(verify.stdout)["ok"] is True


def test_bad_file_exits_2_with_row_and_field(cli: Cli) -> None:
    cli("zones", "add", "downtown")
    (cli.home / "bad.csv").write_bytes(csv_bytes([device(1), device(2, kind="toaster")]))
    proc = cli("devices", "import", "bad.csv", code=2)
    assert "row 3" in proc.stderr and "field kind" in proc.stderr and "toaster" in proc.stderr
    assert json.loads(cli("devices", "list", "--json").stdout)["total"] == 0
    partial = cli("devices", "import", "bad.csv", "--partial")
    assert "1 devices" in partial.stdout and "row" in partial.stderr
    cli("devices", "import", "missing.csv", code=2)
    cli("devices", "show", "nope", code=2)


def test_names_and_kinds_story(cli: Cli) -> None:
    """The issue's story on the CLI: one zone whatever the case, no organization from a file, no second
    city; `cityward doctor` exits 1 on what an earlier version left and 0 once it is resolved."""
    cli("zones", "add", "Harbour", "--criticality", "high")
    taken = cli("zones", "add", "harbour", code=1)
    assert "'Harbour'" in taken.stderr
    assert "cityward init" in cli("orgs", "add", "Harbour Partners", "--kind", "city", code=2).stderr
    header = ["id", "kind", "brand", "model", "firmware_version", "zone", "owner"]
    (cli.home / "inv.csv").write_bytes(csv_bytes([device(1, zone="HARBOUR", owner="Harbour Partners")], header))
    refused = cli("devices", "import", "inv.csv", "--create-missing", code=2)
    squashed = re.sub(r"[\s\u2500-\u257f]", "", refused.stderr)  # however the table wraps its cells
    assert "fieldowner" in squashed and "citywardorgsadd'HarbourPartners'--kindKIND" in squashed
    cli("orgs", "add", "Harbour Partners", "--kind", "integrator")
    cli("devices", "import", "inv.csv")
    cli("zones", "assign", "harbour", "--duty", "maintain", "--org", "harbour partners")
    assert json.loads(cli("devices", "list", "--zone", "harbour", "--json").stdout)["total"] == 1
    assert json.loads(cli("doctor", "--json").stdout) == {"ok": True, "findings": []}
    plat = bootstrap(load_settings(database_url=f"sqlite:///{cli.home / 'cityward.db'}",
                                   secret_key_file=cli.home / "cityward.secret"))
    try:  # what `devices import --create-missing` of earlier versions wrote for a new owner
        from datetime import UTC, datetime

        from cityward.adapters.storage.models import OrganizationRow
        from cityward.domain.names import name_key
        from cityward.services import organizations
        caller = organizations.local_operator(plat.uow, "test")
        with plat.uow(write=True) as uow:
            uow.session.add(OrganizationRow(name="Quay Owners", name_key=name_key("Quay Owners"), kind="city",
                                            created_at=datetime.now(UTC)))
            uow.record(caller, "orgs.created", "organization", "Quay Owners",
                       after={"name": "Quay Owners", "kind": "city"})
            uow.commit()
    finally:
        plat.close()
    found = json.loads(cli("doctor", "--json", code=1).stdout)
    assert found["ok"] is False and [f["check"] for f in found["findings"]] == ["extra_city"]
    assert "Quay Owners" in cli("doctor", code=1).stdout
    cli("orgs", "set-kind", "quay owners", "distributor")
    assert "no problems" in cli("doctor").stdout


def test_integrator_token_is_scoped(cli: Cli) -> None:
    cli("zones", "add", "north")
    cli("zones", "add", "south")
    for org in ("Alpha", "Beta"):
        cli("orgs", "add", org, "--kind", "integrator")
    cli("zones", "assign", "north", "--duty", "maintain", "--org", "Alpha")
    cli("zones", "assign", "south", "--duty", "maintain", "--org", "Beta")
    rows = [device(1, zone="north"), device(2, zone="south")]
    (cli.home / "f.csv").write_bytes(csv_bytes(rows))
    cli("devices", "import", "f.csv")
    token = json.loads(cli("tokens", "create", "ops", "--org", "Beta", "--role", "operator", "--json").stdout)["token"]
    mine = json.loads(cli("devices", "list", "--json", token=token).stdout)
    assert [d["id"] for d in mine["items"]] == ["SL-00002"]
    cli("devices", "show", "SL-00001", token=token, code=2)  # not found for this caller
    (cli.home / "steal.csv").write_bytes(csv_bytes([device(1, zone="north", maintainer="Beta")]))
    proc = cli("devices", "import", "steal.csv", token=token, code=2)
    assert "outside your responsibility" in proc.stderr
    cli("zones", "add", "mine", token=token, code=1)
    cli("devices", "list", token="cw_bad_token", code=1)


def test_tokens_expire_and_the_list_says_when(cli: Cli) -> None:
    from datetime import UTC, datetime, timedelta

    from cityward.adapters.storage.models import TokenRow

    in_90_days = f"{datetime.now(UTC) + timedelta(days=90):%Y-%m-%d}"
    assert f"expires {in_90_days}" in cli("tokens", "create", "ops").stdout
    short = json.loads(cli("tokens", "create", "ci", "--expires", "12h", "--json").stdout)
    assert abs(datetime.fromisoformat(short["expires_at"]) - datetime.now(UTC) - timedelta(hours=12)) < timedelta(
        minutes=1)
    assert "never expires" in cli("tokens", "create", "monitor", "--no-expiry").stdout
    assert "not a duration" in cli("tokens", "create", "x", "--expires", "soon", code=2).stderr
    cli("orgs", "add", "Beta", "--kind", "integrator")
    beta_admin = json.loads(cli("tokens", "create", "b", "--org", "Beta", "--role", "admin", "--json").stdout)
    refused = cli("tokens", "create", "forever", "--no-expiry", token=beta_admin["token"], code=1)
    assert "only a city administrator" in refused.stderr
    plat = bootstrap(load_settings(database_url=cli.env["CITYWARD_DATABASE_URL"]))
    try:
        with plat.uow(write=True) as uow:
            uow.session.get_one(TokenRow, short["id"]).expires_at = datetime(2026, 1, 2, tzinfo=UTC)
            uow.commit()
    finally:
        plat.close()
    listed = cli("tokens", "list").stdout
    assert "expired 2026-01-02 00:00" in listed and "never" in listed and in_90_days in listed
    assert "token expired on 2026-01-02 00:00 UTC" in cli("tokens", "list", token=short["token"], code=1).stderr


def test_rollout_run_says_what_it_cannot_move(cli: Cli) -> None:
    """`rollout run ID` on a rollout this executor cannot move (not started, paused, finished)
    says so at once with the next step, instead of returning silently or waiting."""
    cli("zones", "add", "downtown")
    rows = [device(i, protocol="mqtt") for i in range(3)]
    header = ["id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "protocol"]
    (cli.home / "fleet.csv").write_bytes(csv_bytes(rows, header))
    cli("devices", "import", "fleet.csv")
    cli("rollout", "create", "-o", "reboot", "--devices", "SL-00000,SL-00001")
    cli("rollout", "create", "-o", "reboot", "--devices", "SL-00002")
    ready = cli("rollout", "run", "1", code=1).stderr
    assert "nothing to carry out: rollout 1 is ready (start it: cityward rollout start)" in ready
    cli("rollout", "start", "1")
    cli("rollout", "pause", "1")
    both = " ".join(cli("rollout", "run", "1", "2", code=1).stderr.split())
    assert "rollout 1 is paused (resume or abort it); rollout 2 is ready" in both
    paused = cli("rollout", "run", "1")  # a fact, not a failure: said, and its status shown
    assert "nothing to carry out for rollout 1 is paused" in " ".join(paused.stderr.split())
    assert "paused" in paused.stdout
    assert "not found" in cli("rollout", "run", "9", code=2).stderr


@pytest.mark.xdist_group("default-sim-addresses")  # its simulator binds the same HTTP addresses as README's story
def test_demo_once(tmp_path: Path) -> None:
    """The demo imports the city, brings it online through the simulator (a separate process,
    over the embedded broker and HTTP), reports what the devices said, audits, remediates in bulk
    (password rotation and firmware upgrades in waves, one paused and resumed) and audits again."""
    proc = Cli(tmp_path)("demo", "--once", "--devices", "2000")
    out = proc.stdout
    assert "2,000 devices" in out and "relabeled" in out and "by true manufacturer" in out
    live = re.search(r"online ([\d,]+) · offline ([\d,]+) · never reported ([\d,]+)", out)
    assert live, out
    online, offline, never = (int(g.replace(",", "")) for g in live.groups())
    assert online > 1800 and online + offline + never == 2000  # a few devices play the "offline" fault
    assert "credentials reported" in out and "telnet" in out and ", 0 rejected, 0" in out
    assert "cityward baseline over 2,000 devices" in out and "CRED-001" in out and "worst by zone" in out
    assert "rotate default passwords" in out and "upgrade " in out and "approved by local:night-shift" in out
    assert re.search(r"rollout \d+ paused: wave \d+: \d+ of \d+ failed", proc.stderr + out)
    # Every long step says when it starts and how long it took, in plain lines (stdout is a pipe).
    assert "\x1b" not in out and "\r" not in out
    for label in ("bringing the city's devices online", "devices reporting their state",
                  "auditing the fleet against cityward baseline", "rollout 1 in waves",
                  "waiting for the changed devices to report their new state", "stopping the simulated city"):
        assert re.search(rf"^{re.escape(label)}: done in [\d.]+ s", out, re.M), label
    assert re.search(r"^  rollout 1: running · [\d,]+ of [\d,]+ done", out, re.M)
    rows = {m.group(1): (float(m.group(2).replace(",", "")), float(m.group(3).replace(",", "")))
            for m in re.finditer(r"│ (score|CRED-001 devices|FW-001 devices)\s+│ ([\d.,]+)\s+│ ([\d.,]+)", out)}
    assert set(rows) == {"score", "CRED-001 devices", "FW-001 devices"}, out
    assert rows["score"][1] > rows["score"][0]
    assert rows["CRED-001 devices"][1] < rows["CRED-001 devices"][0] / 10  # default passwords all but gone
    assert rows["FW-001 devices"][1] < rows["FW-001 devices"][0]


def test_demo_output_written_to_a_file_is_readable(tmp_path: Path) -> None:
    """`make demo ARGS=--once > demo.txt`: no control codes or carriage-return redraws, every step
    named with its time (a spinner prints nothing in a file), tables wide enough not to fold ids."""
    run = Cli(tmp_path)
    env = {k: v for k, v in run.env.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    target = tmp_path / "demo.txt"
    with target.open("w") as fh:
        proc = subprocess.run([*CLI, "demo", "--once", "--devices", "300", "--no-live"], cwd=tmp_path, env=env,
                              stdout=fh, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = target.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\r" not in text
    for label in ("setting up zones, partners and the product catalog", "importing 300 devices from the "
                  "installers' inventory", "importing advisories, KEV and EPSS, and matching the fleet",
                  "auditing the fleet against cityward baseline"):
        assert f"{label}…\n" in text and re.search(rf"^{re.escape(label)}: done in [\d.]+ s$", text, re.M), label
    assert re.search(r"│ CVE-\d{4}-\d+ +│", text), text  # not folded over two lines
    assert "sign in as demo / " in text


def test_demo_without_live_devices(tmp_path: Path) -> None:
    """It ends with the dashboard's address and a sign-in that works, new on every run."""
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings
    from cityward.errors import AuthenticationFailed
    from cityward.services import users

    run = Cli(tmp_path)
    out = run("demo", "--once", "--devices", "500", "--no-live").stdout
    assert "500 devices" in out and "live devices" not in out
    first = re.search(r"sign in as demo / (\S+)", out)
    assert first and "http://localhost:8000/" in out[first.start() - 200:], out
    assert out.rstrip().endswith("╯") and out.rindex("see it in the browser") > out.rindex("cityward baseline")
    again = re.search(r"sign in as demo / (\S+)", run("demo", "--once", "--devices", "500", "--no-live").stdout)
    assert again and again.group(1) != first.group(1)
    plat = bootstrap(load_settings(database_url=run.env["CITYWARD_DATABASE_URL"],
                                   secret_key_file=tmp_path / "cityward.secret"))
    try:
        assert users.sign_in(plat.uow, "demo", again.group(1)).caller.is_city_admin
        with pytest.raises(AuthenticationFailed):
            users.sign_in(plat.uow, "demo", first.group(1))  # the previous run's password is gone
    finally:
        plat.close()


def test_serve_answers_over_http(cli: Cli) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = json.loads(cli("tokens", "create", "probe", "--role", "viewer", "--json").stdout)["token"]
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=cli.home, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert httpx.get(f"{url}/api/v1/devices").status_code == 401
        listed = httpx.get(f"{url}/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200 and listed.json()["total"] == 0
        # Its own executor looks for work, so a rollout started on its pages is carried out.
        plat = bootstrap(load_settings(database_url=cli.env["CITYWARD_DATABASE_URL"]))
        try:
            while executors.waiting(plat.uow) is not None:
                assert proc.poll() is None and time.monotonic() < deadline, "serve runs no executor"
                time.sleep(0.2)
        finally:
            plat.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    # uvicorn re-raises SIGTERM once it has shut down; the executor stopped first, or it would say so.
    assert proc.returncode in (0, -15) and "rollouts started here are carried out here" in stderr, stderr
    assert "Traceback" not in stderr and "did not stop" not in stderr
