"""The CLI as scripts and files see it: no markup text, whole ids, exit codes by error category,
JSON problems under --json, no Python errno text, and no heavy import for --version or --help."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO

import pytest

from cityward.errors import (
    AuthenticationFailed,
    CitywardError,
    Conflict,
    InvalidInput,
    NotFound,
    NotInitialized,
    PermissionDenied,
    PreconditionFailed,
    StorageUnavailable,
)
from tests.helpers import HEADER, csv_bytes, device
from tests.test_cli import Cli

HEAVY = ("sqlalchemy", "fastapi", "polars", "pydantic", "httpx", "aiomqtt", "cityward.bootstrap",
         "cityward.services")
LONG = "CAMERA-HARBOUR-NORTH-{:06d}"  # ids as long as a real fleet's, wider than a folded column


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """One small city for the module: 6 devices with long ids, one online and one offline."""
    from cityward.adapters.storage.models import DeviceStateRow
    from cityward.bootstrap import bootstrap
    from cityward.config import load_settings

    home = tmp_path_factory.mktemp("city")
    cli = Cli(home)
    cli("init", "--city", "Port Aurelia")
    cli("zones", "add", "downtown")
    (home / "fleet.csv").write_bytes(csv_bytes((device(i, id=LONG.format(i), protocol="mqtt") for i in range(1, 7)),
                                                  [*HEADER, "protocol"]))
    cli("devices", "import", "fleet.csv")
    plat = bootstrap(load_settings(database_url=f"sqlite:///{home / 'cityward.db'}",
                                   secret_key_file=home / "cityward.secret"))
    now = datetime.now(UTC)
    try:
        with plat.uow(write=True) as uow:
            uow.session.add_all(DeviceStateRow(device_id=LONG.format(i), online=online, status_at=now, last_seen=now,
                                               transport="mqtt") for i, online in ((1, True), (2, False)))
            uow.commit()
    finally:
        plat.close()
    return cli


def _loaded(*args: str) -> list[str]:
    """The heavy modules `cityward ARGS` imported, run in a fresh interpreter."""
    code = ("import json, sys\nfrom cityward.entrypoints.cli.main import main\n"
            f"sys.argv = ['cityward', *{list(args)!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    found: list[str] = json.loads(proc.stderr.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("args", [("--version",), ("--help",), ()])
def test_version_and_help_import_no_heavy_library(args: tuple[str, ...]) -> None:
    assert _loaded(*args) == []


def test_a_command_loads_only_its_own_module() -> None:
    loaded = _loaded("policy", "--help")
    assert not any(m.startswith(("fastapi", "httpx", "aiomqtt")) for m in loaded), loaded


def test_the_root_help_lists_every_command_with_its_own_help() -> None:
    from cityward.entrypoints.cli.main import LAZY

    for name, spec in LAZY.items():
        command = spec.load(name)
        assert (command.help or "").strip() == spec.help, name
    proc = subprocess.run([sys.executable, "-m", "cityward.entrypoints.cli.main", "--help"], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0
    assert all(f" {name} " in proc.stdout for name in LAZY), proc.stdout


def city_cmd() -> list[str]:
    return [sys.executable, "-m", "cityward.entrypoints.cli.main"]


def test_piped_output_has_no_markup_text_and_whole_ids(city: Cli) -> None:
    narrow = dict(city.env, COLUMNS="40")  # a narrow terminal elsewhere must not fold a file's ids
    proc = subprocess.run([*city_cmd(), "devices", "list"], cwd=city.home, env=narrow, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[green]" not in proc.stdout and "[/]" not in proc.stdout and "[red]" not in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour codes in a file either
    lines = proc.stdout.splitlines()
    for i in range(1, 7):
        assert any(LONG.format(i) in line for line in lines), proc.stdout
    first = next(line for line in lines if LONG.format(1) in line)
    second = next(line for line in lines if LONG.format(2) in line)
    assert "online" in first and "offline" in second


def test_tables_take_their_natural_width_off_a_terminal() -> None:
    from cityward.entrypoints.cli.render import _Console, styled, table

    buf = StringIO()
    console = _Console(file=buf, width=30, force_terminal=False)
    console.print(table("devices [bold]x[/]", ["id", "state"],
                        [(LONG.format(15), styled("online", "green")), ("[red]literal[/]", None)]))
    text = buf.getvalue()
    assert LONG.format(15) in text and "[red]literal[/]" in text  # data stays literal
    assert "devices [bold]x[/]" in text  # so does a title
    assert "\x1b[" not in text


@pytest.mark.parametrize("cls, code, status", [
    (InvalidInput, 2, 422), (NotFound, 2, 404), (PermissionDenied, 1, 403), (AuthenticationFailed, 1, 401),
    (Conflict, 1, 409), (PreconditionFailed, 1, 409), (NotInitialized, 1, 503), (StorageUnavailable, 1, 503),
    (CitywardError, 1, 500),
])
def test_each_error_category_has_one_exit_code_and_status(cls: type[CitywardError], code: int, status: int) -> None:
    from cityward.entrypoints.api.problems import status_of

    exc = cls("x")
    assert (exc.exit_code, exc.http_status, status_of(exc)) == (code, status, status)


def test_exit_codes_follow_the_readme(city: Cli) -> None:
    city("devices", "list", "--zone", "nowhere", code=2)  # an unknown name
    city("devices", "show", "NOPE-1", code=2)
    refused = city("devices", "list", "--failing-rule", "CRED-001", code=1)  # refused: no audit yet
    assert "no audit has been run yet" in refused.stderr
    city("audit", "run")
    unknown = city("devices", "list", "--failing-rule", "CRED-999", code=2)  # not an empty list
    assert "CRED-999" in unknown.stderr
    city("devices", "list", "--failing-rule", "CRED-001")
    city("devices", "list", "--limit", "many", code=2)  # bad usage


def test_json_errors_are_problem_objects_on_stderr(city: Cli) -> None:
    missing = city("devices", "show", "NOPE-1", "--json", code=2)
    assert missing.stdout == ""
    problem = json.loads(missing.stderr)
    assert problem["type"] == "urn:cityward:problem:not-found"
    assert (problem["title"], problem["status"], problem["exit_code"]) == ("Not found", 404, 2)
    assert "NOPE-1" in problem["detail"]
    usage = json.loads(city("devices", "list", "--limit", "many", "--json", code=2).stderr)
    assert usage["title"] == "Invalid input" and "--limit" in usage["detail"]
    (city.home / "bad.csv").write_bytes(csv_bytes([device(1, kind="toaster")]))
    bad = json.loads(city("devices", "import", "bad.csv", "--json", code=2).stderr)
    assert bad["status"] == 422 and any(e["row"] == 2 and e["field"] == "kind" for e in bad["errors"])
    refused = json.loads(city("zones", "list", "--json", token="cw_bad", code=1).stderr)
    assert refused["status"] == 401


def test_no_errno_text_for_a_missing_file(city: Cli) -> None:
    proc = city("firmware", "key", "add", "Quarrow", "quarrow-2026", "quarrow.pub", code=2)
    assert "[Errno" not in proc.stderr and "quarrow.pub" in proc.stderr and "No such file" in proc.stderr


def test_untranslated_os_errors_are_said_plainly() -> None:
    from cityward.entrypoints.cli.main import os_error
    from cityward.entrypoints.cli.render import human

    missing = os_error(FileNotFoundError(2, "No such file or directory", "inventory.csv"))
    assert isinstance(missing, InvalidInput) and missing.message == "inventory.csv: No such file or directory"
    denied = os_error(PermissionError(13, "Permission denied", "/etc/shadow"))
    assert denied.exit_code == 1 and "[Errno" not in denied.message
    assert human("cannot connect: [Errno 111] Connection refused") == "cannot connect: Connection refused"


def test_rollout_plan_names_each_skip_reason_as_the_problem(city: Cli) -> None:
    proc = city("rollout", "plan", "-o", "release", code=2)  # nothing is quarantined: everything skipped
    assert "where" not in proc.stderr  # no location column holding the reasons
    assert any("not quarantined" in line and "6 devices" in line for line in proc.stderr.splitlines()), proc.stderr
    problem = json.loads(city("rollout", "plan", "-o", "release", "--json", code=2).stderr)
    assert [e["field"] for e in problem["errors"]] == [None]
    assert problem["errors"][0]["message"].startswith("not quarantined")
