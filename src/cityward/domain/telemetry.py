"""What devices say (docs/protocol.md, v1), decoded and checked before anything is stored.

msgspec decodes and validates in one pass in C: at thousands of messages a second a pydantic or
hand-written validator would be the bottleneck. Every refusal carries a short reason category
(counted) and a detail (logged), so bad input is visible without flooding the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from cityward.domain import limits

PROTOCOL_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
TOPIC_PREFIX = "cityward/v1/"
# How far ahead of the platform's clock a device's `at` may be. Ordering across boots trusts the
# device's clock, so a message dated in the future would otherwise outrank every genuine one until
# that date; NTP keeps a device within a second, five minutes leaves room for a slow sync.
MAX_CLOCK_SKEW = timedelta(minutes=5)
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_TOPIC = re.compile(r"^cityward/v1/([A-Za-z0-9][A-Za-z0-9._:-]{0,63})/(hello|state|status|result)$")

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL; logs and tables break)
DeviceId = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
Short = Annotated[str, Meta(max_length=128, pattern=_PRINTABLE)]
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=_PRINTABLE)]
Text = Annotated[str, Meta(max_length=512, pattern=_PRINTABLE)]
UtcTime = Annotated[datetime, Meta(tz=True)]
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]


class Certificate(msgspec.Struct, frozen=True):
    subject: Text
    issuer: Text
    serial: Short
    not_after: UtcTime


class Credential(msgspec.Struct, frozen=True):
    state: Literal["default", "weak", "unique", "unknown"]
    changed_at: UtcTime | None = None


class Hello(msgspec.Struct, frozen=True, kw_only=True):
    v: Literal[1]
    device_id: DeviceId
    kind: Name
    brand: Short
    model: Short
    firmware_version: Name
    at: UtcTime
    serial: Short | None = None
    mac: Annotated[str, Meta(max_length=17, pattern=_PRINTABLE)] | None = None
    hardware_version: Name | None = None
    protocols: Annotated[list[Name], Meta(max_length=8)] = []
    actions: Annotated[list[Name], Meta(max_length=32)] = []
    rollback: bool = False
    address: Annotated[str, Meta(max_length=260, pattern=_PRINTABLE)] | None = None


class State(msgspec.Struct, frozen=True, kw_only=True):
    v: Literal[1]
    device_id: DeviceId
    seq: Count
    boot_id: Name
    at: UtcTime
    firmware_version: Name
    credential: Credential
    hardware_version: Name | None = None
    uptime_s: Count | None = None
    services: Annotated[list[Name], Meta(max_length=64)] = []
    remote_access: Annotated[list[Name], Meta(max_length=32)] = []
    certificates: Annotated[list[Certificate], Meta(max_length=32)] = []
    config_hash: Annotated[str, Meta(pattern="^[0-9a-f]{64}$")] | None = None
    quarantined: bool = False
    applied_commands: Count | None = None


class Status(msgspec.Struct, frozen=True, kw_only=True):
    v: Literal[1]
    status: Literal["online", "offline"]
    at: UtcTime


TERMINAL = frozenset({"succeeded", "failed", "rejected"})


class Result(msgspec.Struct, frozen=True, kw_only=True):
    v: Literal[1]
    device_id: DeviceId
    command_id: Annotated[str, Meta(min_length=1, max_length=36, pattern=_PRINTABLE)]
    status: Literal["accepted", "in_progress", "succeeded", "failed", "rejected"]
    at: UtcTime
    progress: Annotated[int, Meta(ge=0, le=100)] | None = None
    detail: Annotated[str, Meta(max_length=500, pattern=_PRINTABLE)] | None = None
    repeat: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


Payload = Hello | State | Status | Result
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "hello": msgspec.json.Decoder(Hello),
    "state": msgspec.json.Decoder(State),
    "status": msgspec.json.Decoder(Status),
    "result": msgspec.json.Decoder(Result),
}


@dataclass(frozen=True, slots=True)
class Message:
    """A checked message: `device_id` is the topic's, and any payload id agrees with it."""

    device_id: str
    channel: str  # hello, state, status, result
    payload: Payload


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # a category, counted: bad_topic, oversized, malformed, invalid, version, foreign
    detail: str  # for the log: what exactly was wrong
    device_id: str | None = None


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(device_id, channel) of a device → platform topic, or None."""
    m = _TOPIC.match(topic)
    return (m.group(1), m.group(2)) if m else None


def decode(topic: str, payload: bytes) -> Message | Rejected:
    """Decode one MQTT message from a device; never raises on device input."""
    parsed = parse_topic(topic)
    if parsed is None:
        return Rejected("bad_topic", f"not a device topic: {topic[:200]!r}")
    device_id, channel = parsed
    return decode_payload(device_id, channel, payload)


def decode_payload(device_id: str, channel: str, payload: bytes) -> Message | Rejected:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected("oversized", f"{channel} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}",
                        device_id)
    try:
        limits.check_json(payload, limits.DEVICE_JSON, channel)  # msgspec recurses: a deep payload would raise
        body = _DECODERS[channel].decode(payload)
    except limits.LimitExceeded as exc:
        return Rejected("malformed", f"{channel}: nested deeper than {exc.limit.removeprefix('nesting depth ')}",
                        device_id)
    except msgspec.ValidationError as exc:
        detail = str(exc)
        reason = "version" if detail.endswith("at `$.v`") else "invalid"
        return Rejected(reason, f"{channel}: {detail}", device_id)
    except msgspec.DecodeError as exc:
        return Rejected("malformed", f"{channel}: {exc}", device_id)
    claimed = getattr(body, "device_id", device_id)
    if claimed != device_id:
        return Rejected("foreign", f"{channel} on {device_id}'s topic claims device {claimed!r}", device_id)
    for when in _times(body):
        if when.utcoffset():
            # The protocol says UTC with Z; SQLite would store another offset's wall time as UTC.
            return Rejected("invalid", f"{channel}: time {when.isoformat()} is not UTC (write it with Z)", device_id)
    return Message(device_id, channel, body)


def _times(body: Payload) -> list[datetime]:
    out = [body.at]
    if isinstance(body, State):
        out += [c.not_after for c in body.certificates]
        if body.credential.changed_at is not None:
            out.append(body.credential.changed_at)
    return out


def encode(payload: msgspec.Struct) -> bytes:
    return msgspec.json.encode(payload)


# --- what changed: the facts whose changes make the history ------------------------------------

TRACKED_FACTS = ("online", "firmware_version", "credential_state", "services", "remote_access",
                 "quarantined", "config_hash", "cert_expires_at")


def ahead_of(at: datetime, now: datetime) -> bool:
    """Whether a device's time is further ahead of the platform's clock than the protocol accepts."""
    return at > now + MAX_CLOCK_SKEW


def is_newer(stored_boot: str | None, stored_seq: int | None, stored_at: datetime | None,
             boot_id: str, seq: int, at: datetime, now: datetime | None = None) -> bool:
    """Whether a state message supersedes the stored one: a higher seq within one boot, or a new
    boot reported at or after the stored time (a retained copy or a replay is not newer).

    A stored time ahead of `now` by more than the accepted skew (stored before the bound existed)
    is not trusted: any new boot supersedes it, or that state would stand until its date."""
    if stored_boot is None or stored_seq is None:
        return True
    if boot_id == stored_boot:
        return seq > stored_seq
    if stored_at is None or (now is not None and ahead_of(stored_at, now)):
        return True
    return at >= stored_at


def identity_differences(hello: Hello, *, brand: str | None, serial: str | None,
                         mac: str | None) -> dict[str, dict[str, str]]:
    """What a `hello` says differently from the inventory about who the device is."""
    return announced_differences({"brand": hello.brand, "serial": hello.serial, "mac": hello.mac},
                                 brand=brand, serial=serial, mac=mac)


def announced_differences(announced: Mapping[str, Any], *, brand: str | None, serial: str | None,
                          mac: str | None) -> dict[str, dict[str, str]]:
    """Announced identity fields against the inventory's: brand (any case), serial (exact) and MAC
    (any case, `-` or `:`); a field either side leaves out is not compared. Used on a fresh `hello`
    and on the last recorded announcement, so correcting the inventory clears the finding."""
    def norm_mac(value: str) -> str:
        return value.lower().replace("-", ":")

    pairs = (("brand", brand, announced.get("brand"), str.casefold),
             ("serial", serial, announced.get("serial"), str.strip),
             ("mac", mac, announced.get("mac"), norm_mac))
    return {name: {"inventory": known, "announced": str(said)} for name, known, said, norm in pairs
            if known and said and norm(known) != norm(str(said))}


def earliest_expiry(certificates: list[Certificate]) -> datetime | None:
    return min((c.not_after for c in certificates), default=None)


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(fact, old, new) for every tracked fact that differs; a first report changes everything
    it sets."""
    out = []
    for fact in TRACKED_FACTS:
        if fact not in new:
            continue
        before = old.get(fact) if old else None
        after = new[fact]
        if before != after and not (old is None and after is None):
            out.append((fact, before, after))
    return out


# --- platform → device ---------------------------------------------------------------------------

ACTIONS = frozenset({"set_config", "set_password", "install_certificate", "upgrade_firmware",
                     "rollback_firmware", "reboot", "quarantine", "release"})
SECRET_PARAMS = frozenset({"password", "private_key"})  # never stored, logged or audited


class Command(msgspec.Struct, frozen=True, kw_only=True):
    v: Literal[1] = 1
    command_id: str
    action: str
    issued_at: UtcTime
    expires_at: UtcTime
    params: dict[str, Any] = {}


def redacted(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ("<redacted>" if k in SECRET_PARAMS else v) for k, v in params.items()}


class _Claim(msgspec.Struct):
    device_id: str | None = None


def claimed_device_id(payload: bytes) -> str | None:
    """The `device_id` a payload claims, for answers whose id is not known in advance (discovery)."""
    try:
        limits.check_json(payload, limits.DEVICE_JSON, "payload")
        return msgspec.json.decode(payload, type=_Claim).device_id
    except (msgspec.DecodeError, msgspec.ValidationError, limits.LimitExceeded):
        return None
