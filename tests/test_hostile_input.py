"""Hostile files through the real `cityward` command: each is refused with exit 2 and a message
naming the limit (domain/limits.py), never "internal error", and nothing is stored."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import pytest

from cityward.domain import limits
from tests.helpers import HEADER, csv_bytes, device
from tests.test_cli import Cli

FIXTURES = Path(__file__).parent / "fixtures" / "advisories"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """One city for the module: every file here is refused, so none changes what the next sees."""
    run = Cli(tmp_path_factory.mktemp("hostile"))
    run("init", "--city", "Springfield")
    return run


def rows(cli: Cli, table: str) -> int:
    with sqlite3.connect(cli.home / "cityward.db") as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def refused(cli: Cli, *args: str) -> str:
    proc = cli(*args, code=2)
    assert "internal error" not in proc.stderr.lower()
    return " ".join(proc.stderr.split())  # Rich wraps long lines


def test_nested_json_inventory_is_refused_by_depth_at_once(cli: Cli, tmp_path: Path) -> None:
    nested = tmp_path / "devices.json"
    nested.write_bytes(b"[" * 50_000 + b"]" * 50_000)  # took the import to 6 GB
    message = refused(cli, "devices", "import", str(nested))
    assert f"devices.json: over the limit of nesting depth {limits.INVENTORY_JSON_DEPTH}" in message
    assert rows(cli, "devices") == 0


def test_csv_inventory_cell_over_the_field_limit_names_row_and_limit(cli: Cli, tmp_path: Path) -> None:
    huge = tmp_path / "devices.csv"
    cell = "\n".join(["x" * 1000] * 200)  # 200 KB in one quoted cell, each line short
    huge.write_bytes(csv_bytes([device(1), device(2, serial=cell)]))
    message = refused(cli, "devices", "import", str(huge))
    assert "devices.csv: over the limit of 131,072 characters in one field (row 3)" in message
    assert rows(cli, "devices") == 0


def test_nested_yaml_policy_is_refused_not_an_internal_error(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: " + "[" * 100_000)  # was "internal error" (RecursionError)
    message = refused(cli, "policy", "validate", str(policy))
    assert f"policy.yaml: over the limit of nesting depth {limits.POLICY_YAML_DEPTH}" in message


def test_hostile_advisories_are_each_refused_naming_the_limit_and_nothing_stored(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "feeds"
    folder.mkdir()
    (folder / "epss.csv.gz").write_bytes(gzip.compress(
        b"cve,epss,percentile\nCVE-2024-0001,0.1,0.2\nCVE-2024-0002," + b'"' + b"9" * 200_000 + b'",0.5\n'))
    (folder / "kev.csv").write_bytes(b"cveID,vendorProject,product,dateAdded\nCVE-2024-0001,Acme,Cam,\""
                                     + b"x" * 200_000 + b'",2024-01-01\n')
    record = json.loads((FIXTURES / "cve5" / "CVE-2024-3400.json").read_text())
    record["containers"]["cna"]["descriptions"] = [{"lang": "en", "value": "A" * (2 * limits.ADVISORY_FIELD_BYTES)}]
    (folder / "CVE-2024-3400.json").write_text(json.dumps(record))
    (folder / "nested.json").write_bytes(b'{"document": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    message = refused(cli, "advisories", "import", str(folder))
    assert "4 document(s) refused; nothing imported" in message
    assert "epss.csv.gz: over the limit of 131,072 characters in one field (row 3)" in message
    assert "kev.csv: over the limit of 131,072 characters in one field (row 2)" in message
    assert "CVE-2024-3400.json: over the limit of 1,048,576 bytes in one string" in message
    assert f"nested.json: over the limit of nesting depth {limits.DOCUMENT_JSON_DEPTH}" in message
    for table in ("advisories", "advisory_entries", "epss_scores", "kev_entries"):
        assert rows(cli, table) == 0, table


def test_mqtt_provision_json_prints_json(cli: Cli, tmp_path: Path) -> None:
    inventory = tmp_path / "devices.csv"
    inventory.write_bytes(csv_bytes([device(1, protocol="mqtt")], [*HEADER, "protocol"]))
    cli("devices", "import", "--create-missing", str(inventory))
    report = json.loads(cli("mqtt", "provision", "--out", str(tmp_path / "broker"), "--json").stdout)
    assert report["devices"] == 1 and report["directory"] == str(tmp_path / "broker")
    assert set(report["files"]) == {"config", "passwd", "acl", "bundle"}
    assert all(Path(f).exists() for f in report["files"].values())
