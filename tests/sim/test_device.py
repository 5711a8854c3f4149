"""The pure device model: facts from the row, command handling per protocol §1, firmware checks (§4)."""

from __future__ import annotations

import ast
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

import cityward.sim
from cityward.sim.device import RESULTS_KEPT, Device, Job, Reply, config_hash
from cityward.sim.keys import key_id, sign_firmware
from tests.sim.helpers import ANCHOR, command, device_of, rows

NOW = ANCHOR + timedelta(hours=1)
SEED = 21


@pytest.fixture(scope="module")
def city_rows() -> list[dict[str, str]]:
    return rows(400, SEED)


def a_device(city_rows: list[dict[str, str]], **want: object) -> Device:
    for row in city_rows:
        device = device_of(row, SEED)
        if all(getattr(device, k) == v for k, v in want.items()):
            return device
    raise AssertionError(f"no device with {want}")


def accept(device: Device, cmd: dict[str, object], now: datetime = NOW) -> Job:
    reply = device.receive(cmd, now)
    assert isinstance(reply, Reply) and reply.job is not None, reply
    assert reply.result["status"] == "accepted" and reply.result["repeat"] is False
    return reply.job


def test_sim_imports_nothing_from_cityward_outside_sim() -> None:
    root = Path(cityward.sim.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("cityward") or name.startswith("cityward.sim"), (path, name)


def test_facts_come_from_the_row_and_the_seed(city_rows: list[dict[str, str]]) -> None:
    row = city_rows[0]
    device = device_of(row, SEED)
    assert device == device_of(row, SEED)  # deterministic
    hello = device.hello(NOW)
    for field in ("kind", "brand", "model", "serial", "mac", "hardware_version", "firmware_version"):
        assert hello[field] == row[field]
    assert hello["device_id"] == row["id"] and hello["v"] == 1
    other = device_of(row, SEED + 1)
    assert (other.password, other.config_hash, other.certificates) != (device.password, device.config_hash,
                                                                       device.certificates)
    # a test prefix changes no fact: the random stream is keyed by the base id
    prefixed = device_of({**row, "id": "p-" + row["id"]}, SEED, id_prefix="p-")
    assert (prefixed.password, prefixed.fault, prefixed.config) == (device.password, device.fault, device.config)


def test_default_credentials_are_the_factory_password(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows, credential_state="default")
    assert device.password == device.factory_password and device.credential_changed_at is None
    assert device.state(NOW)["credential"] == {"state": "default", "changed_at": None}
    unique = a_device(city_rows, credential_state="unique")
    assert len(unique.password) >= 16 and unique.credential_changed_at is not None


def test_set_password_applied_once_and_repeat_answered_from_store(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows, credential_state="default")
    cmd = command("set_password", {"password": "x" * 20}, now=NOW)
    job = accept(device, cmd)
    result = device.apply(job, NOW)
    assert result["status"] == "succeeded"
    state = device.state(NOW)
    assert state["credential"]["state"] == "unique" and state["applied_commands"] == 1
    assert device.password == "x" * 20
    again = device.receive(cmd, NOW + timedelta(seconds=5))
    assert isinstance(again, Reply) and again.repeat and again.job is None
    assert again.result == {**result, "repeat": True}
    assert device.applied_commands == 1 and device.applied_by_id == {cmd["command_id"]: 1}


def test_repeat_while_in_progress_returns_the_latest_result(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows, transport="mqtt")
    cmd = command("reboot", now=NOW)
    job = accept(device, cmd)
    device.record(job.command_id, "in_progress", NOW, progress=50, detail="rebooting")
    again = device.receive(cmd, NOW)
    assert isinstance(again, Reply) and again.repeat and again.result["status"] == "in_progress"
    boot = device.boot_id
    device.apply(job, NOW)
    assert device.boot_id != boot and device.seq == 0 and device.uptime(NOW) == 0
    assert device.state(NOW)["seq"] == 1


def test_expired_unknown_and_bad_params_are_rejected(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows)
    expired = command("reboot", now=NOW - timedelta(hours=2), expires_in=60)
    reply = device.receive(expired, NOW)
    assert isinstance(reply, Reply) and reply.job is None
    assert (reply.result["status"], reply.result["detail"]) == ("rejected", "expired")
    again = device.receive(expired, NOW)
    assert isinstance(again, Reply) and again.repeat and again.result["detail"] == "expired"
    unknown = device.receive(command("self_destruct", now=NOW), NOW)
    assert isinstance(unknown, Reply) and unknown.result["detail"] == "unknown action"
    short = device.receive(command("set_password", {"password": "short"}, now=NOW), NOW)
    assert isinstance(short, Reply) and short.result["status"] == "rejected"
    assert short.result["detail"].startswith("bad params")
    assert device.receive([1, 2], NOW) == "not a JSON object"
    assert device.receive({"v": 2, "command_id": "x"}, NOW) == "unknown version"
    assert device.receive({"v": 1, "action": "reboot"}, NOW) == "no command_id"
    assert device.applied_commands == 0


def test_set_config_checks_the_hash(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows)
    config = {"b": 1, "a": {"z": [1, 2], "y": "é"}}
    wrong = accept(device, command("set_config", {"config": config, "config_hash": "0" * 64}, now=NOW))
    assert device.apply(wrong, NOW)["detail"] == "config_hash mismatch"
    canonical = '{"a":{"y":"\\u00e9","z":[1,2]},"b":1}'
    assert config_hash(config) == hashlib.sha256(canonical.encode()).hexdigest()
    good = accept(device, command("set_config", {"config": config, "config_hash": config_hash(config)}, now=NOW))
    assert device.apply(good, NOW)["status"] == "succeeded"
    assert device.config == config and device.state(NOW)["config_hash"] == config_hash(config)
    assert device.applied_commands == 1


def test_quarantine_stops_services_except_the_cityward_channel(city_rows: list[dict[str, str]]) -> None:
    device = next(d for d in (device_of(r, SEED) for r in city_rows) if len(d.services) > 1 and d.remote_access)
    device.apply(accept(device, command("quarantine", {"reason": "telnet open"}, now=NOW)), NOW)
    state = device.state(NOW)
    assert state["quarantined"] is True
    assert state["services"] == [device.transport] and state["remote_access"] == []
    cfg = {"x": 1}
    refused = device.receive(command("set_config", {"config": cfg, "config_hash": config_hash(cfg)}, now=NOW), NOW)
    assert isinstance(refused, Reply) and refused.result["detail"] == "quarantined"
    device.apply(accept(device, command("release", now=NOW)), NOW)
    assert device.state(NOW)["services"] == device.services and device.applied_commands == 2


def test_rollback_boots_the_previous_version(city_rows: list[dict[str, str]]) -> None:
    device = next(d for d in (device_of(r, SEED) for r in city_rows) if d.rollback and d.previous_firmware)
    old, previous = device.firmware_version, device.previous_firmware
    device.apply(accept(device, command("rollback_firmware", now=NOW)), NOW)
    assert (device.firmware_version, device.previous_firmware) == (previous, old)
    no_rollback = a_device(city_rows, rollback=False)
    reply = no_rollback.receive(command("rollback_firmware", now=NOW), NOW)
    assert isinstance(reply, Reply) and reply.result["status"] == "rejected"
    assert "rollback_firmware" not in no_rollback.hello(NOW)["actions"]


def test_results_kept_for_the_last_256_commands(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows)
    ids = [f"cmd-{n}" for n in range(RESULTS_KEPT + 40)]
    for cid in ids:
        device.apply(accept(device, command("release", command_id=cid, now=NOW)), NOW)
    assert len(device.results) == RESULTS_KEPT
    assert device.latest(ids[-RESULTS_KEPT]) is not None and device.latest(ids[0]) is None


def _self_signed(common_name: str, days: int) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(datetime.now(UTC) - timedelta(days=1))
            .not_valid_after(datetime.now(UTC) + timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def test_install_certificate(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows)
    cert, key = _self_signed(device.id, 365)
    result = device.apply(accept(device, command("install_certificate", {"certificate": cert, "private_key": key},
                                                 now=NOW)), NOW)
    assert result["status"] == "succeeded"
    assert device.state(NOW)["certificates"][0]["subject"] == f"CN={device.id}"
    other_cert, _ = _self_signed("other", 30)
    mismatch = device.apply(accept(device, command("install_certificate",
                                                   {"certificate": other_cert, "private_key": key}, now=NOW)), NOW)
    assert mismatch["status"] == "rejected"
    # Protocol v1 has no CSR variant: a command without the key is refused, not half-applied.
    refused = device.receive(command("install_certificate", {"csr_required": True}, now=NOW), NOW)
    assert isinstance(refused, Reply) and refused.result["status"] == "rejected"
    assert "certificate (PEM) is required" in refused.result["detail"]


# --- firmware (§4) ---------------------------------------------------------------------------


def _upgrade(device: Device, image: bytes, *, version: str = "9.9.9", signer: tuple[str, str] | None = None,
             kid: str | None = None, url: str = "http://127.0.0.1:1/fw.bin") -> Job:
    brand, model = signer or device.maker
    digest, signature, signer_kid = sign_firmware(brand, model, version, image, SEED)
    params = {"url": url, "version": version, "size": len(image), "sha256": digest, "signature": signature,
              "key_id": kid or signer_kid}
    return accept(device, command("upgrade_firmware", params, now=NOW))


def test_firmware_signed_by_the_true_manufacturer_installs(city_rows: list[dict[str, str]]) -> None:
    relabeled = next(d for d in (device_of(r, SEED) for r in city_rows) if d.maker != (d.brand, d.model))
    image = b"\x7fELF simulated firmware" * 100
    job = _upgrade(relabeled, image)
    assert relabeled.verify_image(job, image) is None
    assert relabeled.key_id == key_id(relabeled.maker[0], SEED)
    relabeled.install_firmware(job, NOW)
    assert relabeled.firmware_version == "9.9.9" and relabeled.applied_commands == 1
    # signed with the label's brand and model instead of the maker's: refused
    job = _upgrade(relabeled, image, signer=(relabeled.maker[0], relabeled.model))
    assert relabeled.verify_image(job, image) == "bad signature"


def test_tampered_wrong_key_and_unknown_key_are_refused(city_rows: list[dict[str, str]]) -> None:
    device = a_device(city_rows)
    image = bytes(range(256)) * 40
    job = _upgrade(device, image)
    tampered = bytearray(image)
    tampered[100] ^= 1
    assert device.verify_image(job, bytes(tampered)) == "hash mismatch"
    assert device.verify_image(job, image + b"x") == "size mismatch"
    other_maker = next(p for p in ("Quarrow", "Vexlumen") if p != device.maker[0])
    job = _upgrade(device, image, signer=(other_maker, device.maker[1]), kid=device.key_id)
    assert device.verify_image(job, image) == "bad signature"
    job = _upgrade(device, image, kid="nobody-sim-1")
    assert device.verify_image(job, image) == "unknown key"
    assert device.firmware_version == device_of(next(r for r in city_rows if r["id"] == device.id),
                                                SEED).firmware_version
    assert device.applied_commands == 0
    push = device.receive(command("upgrade_firmware", {**job.params, "url": "push"}, now=NOW), NOW)
    if device.transport == "mqtt":
        assert isinstance(push, Reply) and push.result["status"] == "rejected"


# --- property: any sequence of commands, repeats included ------------------------------------

ACTIONS = st.sampled_from(["set_password", "reboot", "quarantine", "release", "set_config", "self_destruct",
                           "set_password_short", "expired"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), ACTIONS), min_size=1, max_size=60))
def test_applied_commands_counts_distinct_applied_ids(steps: list[tuple[int, str]]) -> None:
    device = device_of(rows(3, 5)[0], 5)
    first_action: dict[int, str] = {}
    for n, action in steps:
        action = first_action.setdefault(n, action)  # a command id always carries the same command
        cid = f"cmd-{n}"
        if action == "set_password":
            cmd = command("set_password", {"password": f"secret-password-{n:04d}"}, command_id=cid, now=NOW)
        elif action == "set_password_short":
            cmd = command("set_password", {"password": "short"}, command_id=cid, now=NOW)
        elif action == "set_config":
            cfg = {"n": n}
            cmd = command("set_config", {"config": cfg, "config_hash": config_hash(cfg)}, command_id=cid, now=NOW)
        elif action == "expired":
            cmd = command("reboot", command_id=cid, now=NOW - timedelta(days=1), expires_in=1)
        else:
            cmd = command(action, command_id=cid, now=NOW)
        reply = device.receive(cmd, NOW)
        assert isinstance(reply, Reply)
        if reply.job is not None:
            device.apply(reply.job, NOW)
        else:
            assert reply.repeat or reply.result["status"] == "rejected"
    succeeded = {cid for cid, r in device.results.items() if r["status"] == "succeeded"}
    assert device.applied_commands == len(device.applied_by_id) == len(succeeded)
    assert set(device.applied_by_id) == succeeded
    assert all(count == 1 for count in device.applied_by_id.values())
