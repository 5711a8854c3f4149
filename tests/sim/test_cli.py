"""The command line: one-line errors without tracebacks, key export, inventory files, clean SIGTERM."""

from __future__ import annotations

import csv
import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

from cityward.sim.city import generate_city, iter_device_rows
from cityward.sim.keys import key_id, public_key, sign_firmware, verify_signature
from tests.sim.helpers import require_broker, simulator, unique_prefix


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cityward.sim", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "city.yaml"
    bad.write_text("name: x\nfaults: {offline: 2}\n")
    for args, message in [
        (["run", "--profile", str(bad)], "error: city.yaml: "),
        (["run", "--devices", "3", "--mqtt-url", "mqtt://127.0.0.1:1", "--no-http"],
         "error: cannot reach the MQTT broker at 127.0.0.1:1"),
        (["run", "--mode", "gateway", "--devices", "3"], "error: --mode gateway needs --credentials"),
        (["run", "--credentials", str(tmp_path / "none.json")], "error: "),
        (["run", "--kinds", "toaster"], "error: --kinds: unknown kind toaster"),
    ]:
        done = _sim(*args)
        assert done.returncode != 0, args
        assert done.stderr.startswith(message), (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_keys_and_inventory_export(tmp_path: Path) -> None:
    done = _sim("keys", "--out", str(tmp_path / "keys"), "--seed", "5")
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "keys" / "keys.json").read_text())
    assert key_id("Quarrow", 5) in index and index[key_id("Quarrow", 5)]["brand"] == "Quarrow"
    assert stat.S_IMODE((tmp_path / "keys" / f"{key_id('Quarrow', 5)}.key").stat().st_mode) == 0o600
    assert "Orvanta" not in {v["brand"] for v in index.values()}  # a relabeler signs nothing: its maker does
    digest, signature, _kid = sign_firmware("Quarrow", "QC-410", "1.0", b"img", 5)
    assert verify_signature(public_key("Quarrow", 5), "Quarrow", "QC-410", "1.0", digest, signature)
    assert not verify_signature(public_key("Quarrow", 6), "Quarrow", "QC-410", "1.0", digest, signature)

    done = _sim("inventory", "--out", str(tmp_path / "inv"), "--devices", "40", "--seed", "5", "--id-prefix", "z-")
    assert done.returncode == 0, done.stderr
    with (tmp_path / "inv" / "devices.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == list(iter_device_rows(generate_city(40, 5), 5, id_prefix="z-"))


def test_sigterm_stops_cleanly() -> None:
    require_broker()
    with simulator("--devices", "15", "--seed", "8", "--id-prefix", unique_prefix(), "--state-interval", "0.2",
                   "--rate", "50") as sim:
        sim.process.send_signal(signal.SIGTERM)
        assert sim.process.wait(timeout=15) == 0
        assert sim.process.stderr is not None and "Traceback" not in sim.process.stderr.read()


def test_inventory_names_every_partner_with_its_kind(tmp_path: Path) -> None:
    done = _sim("inventory", "--out", str(tmp_path), "--devices", "400")
    assert done.returncode == 0, done.stderr
    with (tmp_path / "organizations.csv").open(newline="") as fh:
        kinds = {r["name"]: r["kind"] for r in csv.DictReader(fh)}
    with (tmp_path / "devices.csv").open(newline="") as fh:
        named = {r[c] for r in csv.DictReader(fh) for c in ("owner", "installer", "maintainer", "supplier") if r[c]}
    assert named and named <= set(kinds)  # the inventory imports without guessing any organization
    assert "city" not in kinds.values()
    assert kinds["Cobaltline Distribution"] == "distributor" and kinds["Lanternwick Services"] == "integrator"


def test_firmware_is_signed_as_the_manufacturer_and_described_by_an_sbom(tmp_path: Path) -> None:
    from cityward.domain.firmware import verify_image

    done = _sim("firmware", "--out", str(tmp_path), "--brand", "Vexlumen", "--model", "VL-N200", "--version", "4.4.0",
                "--seed", "5")
    assert done.returncode == 0, done.stderr
    image = (tmp_path / "VL-N200-4.4.0.bin").read_bytes()
    signature = (tmp_path / "VL-N200-4.4.0.sig").read_text().strip()
    ok = dict(brand="Vexlumen", model="VL-N200", version="4.4.0", signature_b64=signature)
    assert verify_image(image, key=public_key("Vexlumen", 5), **ok) == []  # the platform's own check
    assert verify_image(image + b"x", key=public_key("Vexlumen", 5), **ok) != []
    assert verify_image(image, key=public_key("Vexlumen", 5), **dict(ok, version="4.4.1")) != []
    sbom = json.loads((tmp_path / "VL-N200-4.4.0.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["metadata"]["component"]["version"] == "4.4.0"
    assert all(c["purl"].startswith("pkg:") for c in sbom["components"])
    refused = _sim("firmware", "--out", str(tmp_path), "--brand", "Orvanta", "--model", "OR-LN2")
    assert refused.returncode == 2 and "not a manufacturer's own product" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_advisories_are_written_for_the_city(tmp_path: Path) -> None:
    done = _sim("advisories", "--out", str(tmp_path / "adv"))
    assert done.returncode == 0, done.stderr
    names = {p.name for p in (tmp_path / "adv").iterdir()}
    assert "quarrow-qrw-sa-2026-001.json" in names and "known_exploited_vulnerabilities.json" in names
    doc = json.loads((tmp_path / "adv" / "quarrow-qrw-sa-2026-001.json").read_text())
    assert doc["document"]["category"] == "csaf_security_advisory"
