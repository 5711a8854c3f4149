"""Render Mosquitto 2 broker files (password file, ACL, config) for cityward's MQTT accounts.

Pure file rendering: no database, no platform services. The rules are protocol §5: a device reads
its own `cmd` and writes its own `hello|state|status|result`; a gateway has the same for itself and
each listed child; the platform reads every device's uplink topics and writes every `cmd`.

Only explicit `user` blocks are written (no `pattern` lines): patterns apply to every account,
platform and gateways included, so explicit blocks are the rules exactly as §5 states them.

Usernames are device ids, restricted to the inventory's rule minus ':' because Mosquitto splits a
password-file line at every ':' (`a:b:$7$…` is read as user `a` with a bad hash and dropped), and
`mosquitto_passwd` refuses such names too. A device whose id has ':' cannot get a broker account.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["device", "gateway", "platform"]

PLATFORM_USERNAME = "cityward-platform"
TOPIC_ROOT = "cityward/v1"
UPLINK_TOPICS = ("hello", "state", "status", "result")  # device → platform
DOWNLINK_TOPIC = "cmd"  # platform → device
DEFAULT_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
SALT_BYTES = 12  # what mosquitto_passwd 2.0 uses

# Inventory rule (letters, digits, `._:-`, 1-64, starting with a letter or digit) minus ':'.
_MQTT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INVENTORY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_HASH = re.compile(r"\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")
_ROLES: tuple[Role, ...] = ("device", "gateway", "platform")


def validate_mqtt_id(value: str) -> str:
    """Return `value` if it can be a broker username and a topic level; ValueError naming it otherwise."""
    if isinstance(value, str) and _MQTT_ID.fullmatch(value):
        return value
    if isinstance(value, str) and _INVENTORY_ID.fullmatch(value):
        raise ValueError(
            f"device id {value!r} contains ':', which Mosquitto's password file uses as its field "
            "separator; such a device cannot have an MQTT broker account"
        )
    raise ValueError(
        f"invalid MQTT id {value!r}: expected 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
    )


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Hash as `mosquitto_passwd` 2.0 does: `$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>`."""
    _check_password(password)
    if iterations < 1:
        raise ValueError(f"iterations must be positive, got {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    elif not salt:
        raise ValueError("salt must not be empty")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True if `password` matches a `$7$` hash (as Mosquitto checks it); False for any other hash."""
    match = _HASH.fullmatch(hashed)
    if match is None:
        return False
    try:
        salt = base64.b64decode(match[2], validate=True)
        expected = base64.b64decode(match[3], validate=True)
    except binascii.Error:
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(match[1]))
    return hmac.compare_digest(actual, expected)


def _check_password(password: str) -> None:
    # Mosquitto hashes the password as a C string, so a NUL would silently truncate it.
    if not isinstance(password, str) or not password:
        raise ValueError("a broker password must be a non-empty string")
    if "\x00" in password:
        raise ValueError("a broker password must not contain NUL")


@dataclass(frozen=True)
class BrokerAccount:
    """One broker login; `children` (gateways only) are the device ids the gateway speaks for."""

    username: str
    password: str = field(repr=False)
    role: Role = "device"
    children: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_mqtt_id(self.username)
        _check_password(self.password)
        if self.role not in _ROLES:
            raise ValueError(f"{self.username}: unknown role {self.role!r}; expected one of {', '.join(_ROLES)}")
        if not isinstance(self.children, tuple):
            raise ValueError(f"{self.username}: children must be a tuple")
        if self.children and self.role != "gateway":
            raise ValueError(f"{self.username}: only a gateway lists children, not a {self.role}")
        seen: set[str] = set()
        for child in self.children:
            validate_mqtt_id(child)
            if child == self.username:
                raise ValueError(f"gateway {self.username} lists itself as a child")
            if child in seen:
                raise ValueError(f"gateway {self.username} lists child {child} twice")
            seen.add(child)

    def acl_lines(self) -> list[str]:
        """The `topic` lines of this account's block, per protocol §5."""
        if self.role == "platform":
            reads = [f"topic read {TOPIC_ROOT}/+/{name}" for name in UPLINK_TOPICS]
            return [*reads, f"topic write {TOPIC_ROOT}/+/{DOWNLINK_TOPIC}"]
        lines: list[str] = []
        for device_id in (self.username, *self.children):
            lines.append(f"topic read {TOPIC_ROOT}/{device_id}/{DOWNLINK_TOPIC}")
            lines.extend(f"topic write {TOPIC_ROOT}/{device_id}/{name}" for name in UPLINK_TOPICS)
        return lines


@dataclass(frozen=True)
class BrokerFiles:
    """Where `write_broker_files` put things."""

    directory: Path
    config: Path
    password_file: Path
    acl_file: Path


def _unique(accounts: Iterable[BrokerAccount]) -> tuple[BrokerAccount, ...]:
    # Two accounts with one username would let Mosquitto keep one hash and merge their ACLs.
    result = tuple(accounts)
    seen: set[str] = set()
    for account in result:
        if not isinstance(account, BrokerAccount):
            raise TypeError(f"expected BrokerAccount, got {type(account).__name__}")
        if account.username in seen:
            raise ValueError(f"duplicate broker username {account.username}")
        seen.add(account.username)
    return result


def render_password_file(accounts: Iterable[BrokerAccount], *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """`username:hash` lines, one per account, freshly salted."""
    return "".join(
        f"{account.username}:{hash_password(account.password, iterations=iterations)}\n"
        for account in _unique(accounts)
    )


def render_acl(accounts: Iterable[BrokerAccount]) -> str:
    """One `user` block per account; nothing for anonymous clients and no patterns."""
    parts = ["# cityward broker ACL (protocol §5), generated: do not edit by hand.\n"]
    for account in _unique(accounts):
        parts.append(f"\nuser {account.username}\n")
        parts.append("".join(f"{line}\n" for line in account.acl_lines()))
    return "".join(parts)


def _conf_value(name: str, value: str) -> str:
    # Mosquitto reads a config value up to the end of the line: a newline would inject directives.
    if not value or any(ch in value for ch in "\r\n\x00"):
        raise ValueError(f"{name} {value!r} cannot be written to mosquitto.conf")
    return value


def render_config(
    *,
    port: int,
    password_file: Path,
    acl_file: Path,
    bind: str = "127.0.0.1",
    log_file: Path | None = None,
    user: str | None = None,
) -> str:
    """A standalone mosquitto.conf: one authenticated listener, no persistence.

    Mosquitto started as root switches to `user` (default `mosquitto`) *before* reading the
    password and ACL files, so those must be readable by that user; pass `user` to choose it.
    Logs go to stderr unless `log_file` is given.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if any(ch.isspace() for ch in bind):
        raise ValueError(f"bind address {bind!r} contains whitespace")
    lines = [
        "# cityward standalone broker, generated: do not edit by hand.",
        "per_listener_settings false",
        f"listener {port} {_conf_value('bind', bind)}",
        "allow_anonymous false",
        f"password_file {_conf_value('password_file', str(password_file))}",
        f"acl_file {_conf_value('acl_file', str(acl_file))}",
        "persistence false",
        f"log_dest file {_conf_value('log_file', str(log_file))}" if log_file else "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if user is not None:
        lines.append(f"user {_conf_value('user', user)}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str, mode: int) -> None:
    # A broker reloading on SIGHUP must see either the old file or the new one, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_broker_files(
    directory: Path,
    accounts: Iterable[BrokerAccount],
    *,
    port: int,
    bind: str = "127.0.0.1",
    user: str | None = None,
) -> BrokerFiles:
    """Write `passwd` (0600), `acl` and `mosquitto.conf` (0644) into `directory`, each atomically."""
    accounts = _unique(accounts)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(
        directory=directory,
        config=directory / "mosquitto.conf",
        password_file=directory / "passwd",
        acl_file=directory / "acl",
    )
    config = render_config(
        port=port, password_file=files.password_file, acl_file=files.acl_file, bind=bind, user=user
    )
    _write_atomic(files.password_file, render_password_file(accounts), 0o600)
    _write_atomic(files.acl_file, render_acl(accounts), 0o644)
    _write_atomic(files.config, config, 0o644)
    _hand_to_broker_user(files.password_file, user)
    return files


def _hand_to_broker_user(password_file: Path, user: str | None) -> None:
    """Started as root, Mosquitto becomes its `user` (default `mosquitto`) before it reads the
    0600 password file: give the file to that account when we are root and it exists, so the
    generated broker starts as written. Otherwise the file stays the provisioning user's."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    import pwd

    try:
        account = pwd.getpwnam(user or "mosquitto")
    except KeyError:
        return
    os.chown(password_file, account.pw_uid, account.pw_gid)
