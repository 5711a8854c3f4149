"""City profiles: the bundled one, validation messages, determinism and the configured shares."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cityward.sim.city import generate_city, iter_device_rows, loopback_address
from cityward.sim.profile import DEFAULT_PROFILE, ProfileError, load_profile
from tests.sim.helpers import ANCHOR, device_of, rows


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def raw() -> dict[str, Any]:
    return dict(yaml.safe_load(DEFAULT_PROFILE.read_text()))


def test_bundled_profile_loads() -> None:
    profile = load_profile()
    assert profile.name == "Port Aurelia" and profile.devices == 2000
    assert load_profile(DEFAULT_PROFILE) == profile
    assert profile.root("Cobaltline", "CL-Eye 4") == ("Quarrow", "QC-410")
    relabel = profile.product("Orvanta", "OR-LN2")
    assert relabel is not None and relabel.default_password == "vex1234"  # inherited from its origin
    assert abs(sum(s for _f, s in profile.faults) - 0.15) < 1e-9


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["faults"].__setitem__("offline", 1.5),
     "profile.yaml: faults.offline: must be a share between 0 and 1"),
    (lambda d: d["faults"].__setitem__("meteor", 0.1), "profile.yaml: faults.meteor: unknown fault"),
    (lambda d: d["faults"].update(offline=0.6, flaky=0.6), "profile.yaml: faults: the shares must sum to at most 1"),
    (lambda d: d["kinds"]["camera"].__setitem__("weight", "many"),
     "profile.yaml: kinds.camera.weight: must be a number"),
    (lambda d: d["products"][2].__setitem__("origin", ["Nobody", "X"]),
     "profile.yaml: products[2] (Orvanta OR-LN2).origin: Nobody X must be listed before it"),
    (lambda d: d["products"][0].__setitem__("kind", "toaster"),
     "profile.yaml: products[0] (Vexlumen VL-N200).kind: 'toaster' is not one of kinds"),
    (lambda d: d["timing"].__setitem__("flaky_up", [9, 1]), "profile.yaml: timing.flaky_up: min must not exceed max"),
    (lambda d: d["credentials"].__setitem__("weak", 0.9),
     "profile.yaml: credentials: default + weak must not exceed 1"),
    (lambda d: d.__setitem__("colour", "blue"), "profile.yaml: colour: unknown field"),
    (lambda d: d.pop("timing"), "profile.yaml: timing: is required"),
])
def test_validation_names_file_and_field(tmp_path: Path, raw: dict[str, Any], change: Any, message: str) -> None:
    change(raw)
    with pytest.raises(ProfileError) as info:
        load_profile(_write(tmp_path, raw))
    assert str(info.value).startswith(message), str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds: [unclosed\n")
    with pytest.raises(ProfileError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_profile(bad)


def test_another_profile_changes_the_mix(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["kinds"] = {"camera": {**raw["kinds"]["camera"], "weight": 1}}
    raw["products"] = [p for p in raw["products"] if p["kind"] == "camera"]
    profile = load_profile(_write(tmp_path, raw))
    city = list(iter_device_rows(generate_city(50, 3, profile), 3))
    assert {r["kind"] for r in city} == {"camera"}
    assert generate_city(50, 3) == generate_city(50, 3, load_profile())


def test_same_seed_same_devices_and_behaviours() -> None:
    first = [device_of(r, 9) for r in rows(200, 9)]
    again = [device_of(r, 9) for r in rows(200, 9)]
    assert first == again
    other = [device_of(r, 10) for r in rows(200, 10)]
    assert [d.fault for d in first] != [d.fault for d in other]


def test_http_devices_get_their_own_loopback_address() -> None:
    city = rows(3000, 7)
    http = [r["address"] for r in city if r["protocol"] == "http"]
    assert http and len(set(http)) == len(http)
    for address in http:
        host, port = address.rsplit(":", 1)
        octets = [int(x) for x in host.split(".")]
        assert port == "8080" and octets[0] == 127 and host != "127.0.0.1"
        assert all(1 <= o <= 254 for o in octets[1:])
    assert loopback_address(0) == "127.1.1.1:8080" and loopback_address(254) == "127.1.2.1:8080"
    prefixed = rows(3000, 7, id_prefix="x-")
    assert all(r["id"].startswith("x-") for r in prefixed)
    assert not set(http) & {r["address"] for r in prefixed if r["protocol"] == "http"}


def test_shares_roughly_as_configured() -> None:
    profile = load_profile()
    devices = [device_of(r, 4) for r in rows(6000, 4)]
    n = len(devices)
    faults = Counter(d.fault for d in devices)
    for name, share in profile.faults:
        assert abs(faults[name] / n - share) < 0.012 + share * 0.25, (name, faults[name] / n)
    creds = Counter(d.credential_state for d in devices)
    assert abs(creds["default"] / n - profile.default_credentials) < 0.03
    assert abs(creds["weak"] / n - profile.weak_credentials) < 0.03
    for service, share in profile.services:
        assert abs(sum(service in d.services for d in devices) / n - share) < 0.03, service
    for channel, share in profile.remote_access:
        assert abs(sum(channel in d.remote_access for d in devices) / n - share) < 0.03, channel
    no_cert = sum(not d.certificates for d in devices) / n
    expired = sum(bool(d.certificates) and d.certificates[0].not_after < ANCHOR for d in devices) / n
    soon = sum(bool(d.certificates) and ANCHOR <= d.certificates[0].not_after < ANCHOR + timedelta(days=30)
               for d in devices) / n
    assert abs(no_cert - profile.cert_none) < 0.03
    assert abs(expired - profile.cert_expired) < 0.03 and abs(soon - profile.cert_expiring) < 0.03
    assert {d.transport for d in devices} == {"mqtt", "http"}
