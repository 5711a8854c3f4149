"""Broker accounts and ACL (protocol §5), checked against a real private Mosquitto.

Negative checks ("not delivered") need no long sleeps: after the forbidden publish, an allowed
sentinel is sent; Mosquitto routes a QoS 1 publish before it acknowledges it, so once the
sentinel arrives, anything forbidden that slipped through would have arrived too.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityward.adapters.mosquitto import (
    PLATFORM_USERNAME,
    BrokerAccount,
    hash_password,
    render_acl,
    render_config,
    render_password_file,
    validate_mqtt_id,
    verify_password,
    write_broker_files,
)
from tests.brokers import BrokerInfo, MqttProbe, Received, connected, private_mosquitto

DEVICES = ("SL-000001", "SL-000002", "ENV_3.a-b")
GATEWAY = "GW-000007"
CHILDREN = ("SL-000004", "ENV-000005")
NON_CHILD = "SL-000006"  # has no account and is nobody's child
PASSWORDS = {name: secrets.token_urlsafe(24) for name in (*DEVICES, GATEWAY, PLATFORM_USERNAME)}
ACCOUNTS = (
    *(BrokerAccount(name, PASSWORDS[name]) for name in DEVICES),
    BrokerAccount(GATEWAY, PASSWORDS[GATEWAY], "gateway", CHILDREN),
    BrokerAccount(PLATFORM_USERNAME, PASSWORDS[PLATFORM_USERNAME], "platform"),
)
UPLINKS = ("hello", "state", "status", "result")
PROTOCOLS = pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
NOT_AUTHORIZED = 0x87


def topic(device: str, name: str) -> str:
    return f"cityward/v1/{device}/{name}"


def token() -> bytes:
    return uuid.uuid4().hex.encode()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    with private_mosquitto(tmp_path_factory.mktemp("mosquitto-acl"), ACCOUNTS) as info:
        yield info


def login(broker: BrokerInfo, name: str, v5: bool) -> AbstractContextManager[MqttProbe]:
    return connected(broker, name, PASSWORDS[name], v5=v5)


def _assert_forbidden_publish(probe: MqttProbe, where: str, v5: bool) -> None:
    reason = probe.publish(where, token())
    # MQTT 3.1.1 has no way to say "not authorized" in a PUBACK: Mosquitto acks and drops.
    assert reason.value == (NOT_AUTHORIZED if v5 else 0), f"{probe.username} → {where}: {reason}"


# --- against the real broker -----------------------------------------------------------------


@PROTOCOLS
def test_platform_receives_every_uplink_of_devices_and_gateway_children(broker: BrokerInfo, v5: bool) -> None:
    with login(broker, PLATFORM_USERNAME, v5) as platform:
        granted = platform.subscribe(*(topic("+", name) for name in UPLINKS))
        assert [r.value for r in granted] == [1, 1, 1, 1]
        expected: set[Received] = set()
        for name in DEVICES:
            with login(broker, name, v5) as device:
                for uplink in UPLINKS:
                    payload = token()
                    assert device.publish(topic(name, uplink), payload).value == 0
                    expected.add(Received(topic(name, uplink), payload))
        with login(broker, GATEWAY, v5) as gateway:
            for device_id in (GATEWAY, *CHILDREN):
                for uplink in UPLINKS:
                    payload = token()
                    assert gateway.publish(topic(device_id, uplink), payload).value == 0
                    expected.add(Received(topic(device_id, uplink), payload))
        got = platform.collect_all(expected)
        assert set(got) == expected


@PROTOCOLS
def test_device_cannot_publish_for_another_device_nor_send_commands(broker: BrokerInfo, v5: bool) -> None:
    me, other = DEVICES[0], DEVICES[1]
    with login(broker, PLATFORM_USERNAME, v5) as platform, login(broker, other, v5) as victim:
        platform.subscribe(*(topic("+", name) for name in UPLINKS))
        victim.subscribe(topic(other, "cmd"))
        with login(broker, me, v5) as device:
            for uplink in UPLINKS:
                _assert_forbidden_publish(device, topic(other, uplink), v5)
            _assert_forbidden_publish(device, topic(other, "cmd"), v5)  # forged command to a peer
            _assert_forbidden_publish(device, topic(me, "cmd"), v5)  # cmd is platform → device only
            _assert_forbidden_publish(device, f"cityward/v1/{me}/other", v5)
            _assert_forbidden_publish(device, "elsewhere", v5)
            sentinel = token()
            device.publish(topic(me, "state"), sentinel)
        assert platform.collect_until(topic(me, "state"), sentinel) == [Received(topic(me, "state"), sentinel)]
        command = token()
        platform.publish(topic(other, "cmd"), command)
        assert victim.collect_until(topic(other, "cmd"), command) == [Received(topic(other, "cmd"), command)]


@PROTOCOLS
def test_device_receives_only_its_own_cmd_whatever_it_subscribes(broker: BrokerInfo, v5: bool) -> None:
    me, other = DEVICES[0], DEVICES[2]
    with login(broker, PLATFORM_USERNAME, v5) as platform, login(broker, me, v5) as device, \
            login(broker, other, v5) as peer:
        # Mosquitto 2.0.11 grants these subscriptions; the read ACL filters at delivery.
        device.subscribe(topic(other, "cmd"), topic("+", "cmd"), "#", topic(me, "cmd"))
        peer.subscribe(topic(other, "cmd"))
        for_peer, for_me = token(), token()
        assert platform.publish(topic(other, "cmd"), for_peer).value == 0
        assert platform.publish(topic(me, "cmd"), for_me).value == 0
        got = device.collect_until(topic(me, "cmd"), for_me)
        assert {item.topic for item in got} == {topic(me, "cmd")}  # v5 delivers once per matching filter
        assert peer.collect_until(topic(other, "cmd"), for_peer) == [Received(topic(other, "cmd"), for_peer)]
        # nor can a device read another device's uplinks
        leaked = token()
        peer.publish(topic(other, "state"), leaked)
        sentinel = token()
        platform.publish(topic(me, "cmd"), sentinel)
        assert Received(topic(other, "state"), leaked) not in device.collect_until(topic(me, "cmd"), sentinel)


@PROTOCOLS
@pytest.mark.parametrize(
    ("username", "password"),
    [
        (DEVICES[0], "wrong-password"),
        (DEVICES[0], PASSWORDS[DEVICES[1]]),  # another device's password
        ("SL-999999", "whatever"),  # unknown username
        (CHILDREN[0], PASSWORDS[GATEWAY]),  # a gateway child has no login of its own
        (PLATFORM_USERNAME, PASSWORDS[DEVICES[0]]),
    ],
    ids=["wrong-password", "other-devices-password", "unknown-user", "gateway-child", "platform-wrong"],
)
def test_bad_credentials_are_refused_at_connect(broker: BrokerInfo, v5: bool, username: str, password: str) -> None:
    probe = MqttProbe(broker, username, password, v5=v5)
    reason = probe.connect()
    assert reason.is_failure
    assert reason.value == NOT_AUTHORIZED  # 3.1.1's CONNACK 5 maps to the same reason in paho


@PROTOCOLS
def test_gateway_speaks_for_its_children_only(broker: BrokerInfo, v5: bool) -> None:
    with login(broker, PLATFORM_USERNAME, v5) as platform, login(broker, GATEWAY, v5) as gateway:
        platform.subscribe(*(topic("+", name) for name in UPLINKS))
        gateway.subscribe(*(topic(device_id, "cmd") for device_id in (GATEWAY, *CHILDREN, NON_CHILD, DEVICES[0])))
        for stranger in (NON_CHILD, DEVICES[0]):
            for uplink in UPLINKS:
                _assert_forbidden_publish(gateway, topic(stranger, uplink), v5)
        sentinel = token()
        gateway.publish(topic(CHILDREN[1], "status"), sentinel)
        assert platform.collect_until(topic(CHILDREN[1], "status"), sentinel) == [
            Received(topic(CHILDREN[1], "status"), sentinel)
        ]
        strangers = [(topic(device_id, "cmd"), token()) for device_id in (NON_CHILD, DEVICES[0])]
        for where, payload in strangers:
            assert platform.publish(where, payload).value == 0
        expected = {Received(topic(device_id, "cmd"), token()) for device_id in (GATEWAY, *CHILDREN)}
        for item in expected:
            assert platform.publish(item.topic, item.payload).value == 0
        got = gateway.collect_all(expected)
        assert set(got) == expected


@PROTOCOLS
def test_platform_cannot_forge_uplinks_nor_read_commands(broker: BrokerInfo, v5: bool) -> None:
    device_id = DEVICES[1]
    with login(broker, PLATFORM_USERNAME, v5) as platform, login(broker, device_id, v5) as device:
        platform.subscribe(*(topic("+", name) for name in UPLINKS), topic("+", "cmd"))
        for uplink in UPLINKS:
            _assert_forbidden_publish(platform, topic(device_id, uplink), v5)
        _assert_forbidden_publish(platform, "cityward/v1/cmd", v5)  # only one level under v1 is a device
        assert platform.publish(topic(device_id, "cmd"), token()).value == 0
        sentinel = token()
        device.publish(topic(device_id, "result"), sentinel)
        assert platform.collect_until(topic(device_id, "result"), sentinel) == [
            Received(topic(device_id, "result"), sentinel)
        ]


# --- hashing -----------------------------------------------------------------------------------


def _mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(found).exists():
        pytest.fail("mosquitto_passwd is required; install Debian's mosquitto package", pytrace=False)
    return found


@pytest.mark.parametrize("password", ["secret", "pässwörd ✓ with spaces", "x" * 128, "a:b$7$c"])
def test_hash_matches_mosquitto_passwd(tmp_path: Path, password: str) -> None:
    path = tmp_path / "passwd"
    subprocess.run([_mosquitto_passwd(), "-b", "-c", str(path), "alice", password], check=True, capture_output=True)
    username, stored = path.read_text().strip().split(":", 1)
    assert username == "alice"
    _, kind, iterations, salt, _digest = stored.split("$")
    assert (kind, iterations) == ("7", "101")
    assert len(base64.b64decode(salt)) == 12
    assert hash_password(password, salt=base64.b64decode(salt), iterations=int(iterations)) == stored
    assert verify_password(password, stored)
    assert not verify_password(password + "!", stored)


def test_hash_format_and_fresh_salt() -> None:
    first, second = hash_password("secret"), hash_password("secret")
    assert first != second
    for hashed in (first, second):
        _, kind, iterations, salt, digest = hashed.split("$")
        assert (kind, iterations) == ("7", "101")
        assert len(base64.b64decode(salt, validate=True)) == 12
        assert len(base64.b64decode(digest, validate=True)) == 64
    assert hash_password("secret", iterations=5).startswith("$7$5$")
    assert not verify_password("secret", "$6$abc$def")
    assert not verify_password("secret", "$7$101$!!!$???")


@settings(max_examples=50, deadline=None)
@given(password=st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                        min_size=1, max_size=40),
       salt=st.binary(min_size=1, max_size=32))
def test_hash_roundtrip(password: str, salt: bytes) -> None:
    hashed = hash_password(password, salt=salt, iterations=3)
    assert verify_password(password, hashed)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"password": ""}, "non-empty"), ({"password": "a\x00b"}, "NUL"), ({"iterations": 0}, "iterations"),
     ({"salt": b""}, "salt")],
)
def test_hash_refuses_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"password": "secret", **kwargs}
    with pytest.raises(ValueError, match=message):
        hash_password(**args)  # type: ignore[arg-type]


# --- rendering ---------------------------------------------------------------------------------


def test_render_acl_is_exactly_protocol_section_5() -> None:
    accounts = [
        BrokerAccount("SL-1", "p"),
        BrokerAccount("GW-1", "p", "gateway", ("SL-2",)),
        BrokerAccount(PLATFORM_USERNAME, "p", "platform"),
    ]
    assert render_acl(accounts) == (
        "# cityward broker ACL (protocol §5), generated: do not edit by hand.\n"
        "\nuser SL-1\n"
        "topic read cityward/v1/SL-1/cmd\n"
        "topic write cityward/v1/SL-1/hello\n"
        "topic write cityward/v1/SL-1/state\n"
        "topic write cityward/v1/SL-1/status\n"
        "topic write cityward/v1/SL-1/result\n"
        "\nuser GW-1\n"
        "topic read cityward/v1/GW-1/cmd\n"
        "topic write cityward/v1/GW-1/hello\n"
        "topic write cityward/v1/GW-1/state\n"
        "topic write cityward/v1/GW-1/status\n"
        "topic write cityward/v1/GW-1/result\n"
        "topic read cityward/v1/SL-2/cmd\n"
        "topic write cityward/v1/SL-2/hello\n"
        "topic write cityward/v1/SL-2/state\n"
        "topic write cityward/v1/SL-2/status\n"
        "topic write cityward/v1/SL-2/result\n"
        f"\nuser {PLATFORM_USERNAME}\n"
        "topic read cityward/v1/+/hello\n"
        "topic read cityward/v1/+/state\n"
        "topic read cityward/v1/+/status\n"
        "topic read cityward/v1/+/result\n"
        "topic write cityward/v1/+/cmd\n"
    )
    assert "pattern" not in render_acl(ACCOUNTS)


def test_render_password_file_one_verifiable_line_per_account() -> None:
    lines = render_password_file(ACCOUNTS).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [account.username for account in ACCOUNTS]
    for account, line in zip(ACCOUNTS, lines, strict=True):
        assert verify_password(account.password, line.split(":", 1)[1])


def test_password_is_not_in_repr() -> None:
    assert "hunter2" not in repr(BrokerAccount("SL-1", "hunter2"))


@pytest.mark.parametrize(
    "bad", ["", "a+b", "+", "#", "a#", "a/b", "a b", " a", "a\nb", "a\tb", "-a", ".a", "_a", "x" * 65, "é", "a*b"]
)
def test_invalid_ids_are_refused_naming_the_id(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid MQTT id") as err:
        validate_mqtt_id(bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError):
        BrokerAccount(bad, "p")
    with pytest.raises(ValueError):
        BrokerAccount("GW-1", "p", "gateway", ("SL-1", bad))


def test_colon_ids_are_refused_for_mqtt() -> None:
    # Valid inventory ids, but Mosquitto splits passwd lines at every ':' (see module docstring).
    for bad in ("a:b", "SL:000001", "02:01:00:00:5a:17"):
        with pytest.raises(ValueError, match="contains ':'") as err:
            BrokerAccount(bad, "p")
        assert repr(bad) in str(err.value)
    assert validate_mqtt_id("x" * 64) == "x" * 64
    assert validate_mqtt_id("A.b_c-9") == "A.b_c-9"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BrokerAccount("SL-1", "p", "device", ("SL-2",)), "only a gateway"),
        (lambda: BrokerAccount("P", "p", "platform", ("SL-2",)), "only a gateway"),
        (lambda: BrokerAccount("GW-1", "p", "gateway", ("SL-2", "SL-2")), "twice"),
        (lambda: BrokerAccount("GW-1", "p", "gateway", ("GW-1",)), "itself"),
        (lambda: BrokerAccount("SL-1", "p", "admin"), "unknown role"),  # type: ignore[arg-type]
        (lambda: BrokerAccount("SL-1", ""), "non-empty"),
        (lambda: BrokerAccount("GW-1", "p", "gateway", ["SL-2"]), "tuple"),  # type: ignore[arg-type]
        (lambda: render_acl([BrokerAccount("SL-1", "p"), BrokerAccount("SL-1", "q")]), "duplicate"),
        (lambda: render_password_file([BrokerAccount("SL-1", "p"), BrokerAccount("SL-1", "q")]), "duplicate"),
    ],
)
def test_inconsistent_accounts_are_refused(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_render_config(tmp_path: Path) -> None:
    text = render_config(port=18830, password_file=tmp_path / "passwd", acl_file=tmp_path / "acl")
    lines = text.splitlines()
    for expected in ("listener 18830 127.0.0.1", "allow_anonymous false", f"password_file {tmp_path / 'passwd'}",
                     f"acl_file {tmp_path / 'acl'}", "persistence false", "log_dest stderr"):
        assert expected in lines
    assert not any(line.startswith("user ") for line in lines)
    assert "user mosquitto" in render_config(port=1, password_file=Path("p"), acl_file=Path("a"), user="mosquitto")
    assert f"log_dest file {tmp_path / 'log'}" in render_config(
        port=1, password_file=Path("p"), acl_file=Path("a"), log_file=tmp_path / "log"
    )
    with pytest.raises(ValueError, match="password_file"):
        render_config(port=1, password_file=Path("p\nallow_anonymous true"), acl_file=Path("a"))
    with pytest.raises(ValueError, match="port"):
        render_config(port=0, password_file=Path("p"), acl_file=Path("a"))
    with pytest.raises(ValueError, match="bind"):
        render_config(port=1, password_file=Path("p"), acl_file=Path("a"), bind="0.0.0.0 1")


def test_write_broker_files_modes_and_atomic_replace(tmp_path: Path) -> None:
    files = write_broker_files(tmp_path / "broker", ACCOUNTS[:1], port=18830)
    assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.acl_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(files.config.stat().st_mode) == 0o644
    assert f"password_file {files.password_file}" in files.config.read_text()
    before = files.password_file.stat().st_ino
    files = write_broker_files(tmp_path / "broker", ACCOUNTS, port=18830)
    assert files.password_file.stat().st_ino != before  # replaced, not rewritten in place
    assert len(files.password_file.read_text().splitlines()) == len(ACCOUNTS)
    assert sorted(p.name for p in files.directory.iterdir()) == ["acl", "mosquitto.conf", "passwd"]
    with pytest.raises(ValueError, match="duplicate"):
        write_broker_files(tmp_path / "broker", [*ACCOUNTS, ACCOUNTS[0]], port=18830)
    assert len(files.password_file.read_text().splitlines()) == len(ACCOUNTS)  # untouched on error


def test_ten_thousand_accounts_render_fast() -> None:
    accounts = [BrokerAccount(f"SL-{i:06d}", "x" * 32) for i in range(10_000)]
    accounts.append(BrokerAccount(PLATFORM_USERNAME, "p" * 32, "platform"))
    started = time.perf_counter()
    passwd, acl = render_password_file(accounts), render_acl(accounts)
    elapsed = time.perf_counter() - started
    assert passwd.count("\n") == 10_001
    assert acl.count("\nuser ") == 10_001
    assert elapsed < 10, f"10k accounts took {elapsed:.2f} s"  # ~0.7 s measured; generous for loaded CI
