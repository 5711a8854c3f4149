"""Signed checkpoints of the audit chain's head, kept outside the database.

The chain alone cannot show that its tail was cut off, nor that someone with write access to the
database rewrote an event and recomputed every later hash: what is left still chains. An anchor is
the city's Ed25519 signature over (sequence number, head hash, event count, time); kept in a file
beside the database and sent to partners, it pins the chain up to that event. A later log whose
event `seq` no longer has the anchored hash was rewritten; one that ends before `seq` was cut.

The signed message (what a partner checks with the city's public key, `cityward auditlog
anchor-key`) is the ASCII line ``cityward audit anchor v1`` followed by a newline and the canonical
JSON (sorted keys, no spaces, ASCII) of every field of the anchor except `sig`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cityward.domain.auditchain import ChainReport

VERSION = 1
DOMAIN = b"cityward audit anchor v1\n"  # no other cityward signature can be passed off as an anchor
MAX_LINE = 4096  # an anchor is about 300 bytes; a longer line is not one
_FIELDS = ("v", "city", "seq", "head", "events", "at", "key", "sig")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Anchor:
    city: str
    seq: int  # the anchored event: the head when the anchor was made
    head: str  # its hash
    events: int  # events in the chain then (sequence numbers run from 1, so equal to seq)
    at: datetime  # aware, UTC
    key: str  # the signing key's id (`key_id`)
    sig: str  # base64 Ed25519 signature over `message()`

    def fields(self) -> dict[str, Any]:
        return {"v": VERSION, "city": self.city, "seq": self.seq, "head": self.head, "events": self.events,
                "at": self.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "key": self.key, "sig": self.sig}

    def message(self) -> bytes:
        signed = {k: v for k, v in self.fields().items() if k != "sig"}
        return DOMAIN + json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def line(self) -> str:
        """One line of an anchors file (JSON Lines), also the `anchor` of a notification."""
        return json.dumps(self.fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign_head(key: Ed25519PrivateKey, city: str, report: ChainReport, at: datetime) -> Anchor:
    """The anchor of a verified chain's head (`report.ok`; an empty chain has nothing to anchor)."""
    if not report.ok or report.events < 1:
        raise ValueError("only the head of a verified, non-empty chain is anchored")
    unsigned = Anchor(city=city, seq=report.events, head=report.head, events=report.events,
                      at=at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC), key=key_id(key.public_key()),
                      sig="")
    signature = base64.b64encode(key.sign(unsigned.message())).decode()
    return Anchor(**{**unsigned.__dict__, "sig": signature})


def signature_ok(public: Ed25519PublicKey, anchor: Anchor) -> bool:
    try:
        raw = base64.b64decode(anchor.sig, validate=True)
        public.verify(raw, anchor.message())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def parse_line(text: str) -> Anchor:
    """One anchors-file line; ValueError says which field is wrong (the caller adds file and line)."""
    if len(text) > MAX_LINE:
        raise ValueError(f"longer than {MAX_LINE} characters: not an anchor")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("not a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise ValueError(f"field {missing[0]!r} is missing")
    if data["v"] != VERSION or isinstance(data["v"], bool):
        raise ValueError(f"field 'v': version {data['v']!r} is not {VERSION}")
    for name in ("seq", "events"):
        value = data[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_SEQ:
            raise ValueError(f"field {name!r} must be a whole number from 1 to {_MAX_SEQ}")
    if data["events"] != data["seq"]:
        raise ValueError("field 'events' must equal 'seq' (sequence numbers run from 1)")
    if not isinstance(data["head"], str) or not _HEX64.fullmatch(data["head"]):
        raise ValueError("field 'head' must be 64 lowercase hexadecimal digits")
    if not isinstance(data["key"], str) or not _KEY_ID.fullmatch(data["key"]):
        raise ValueError("field 'key' must be 16 lowercase hexadecimal digits")
    if not isinstance(data["city"], str) or not 1 <= len(data["city"]) <= 200:
        raise ValueError("field 'city' must be a name of 1 to 200 characters")
    if not isinstance(data["sig"], str) or len(data["sig"]) != 88:
        raise ValueError("field 'sig' must be a base64 Ed25519 signature (88 characters)")
    at = data["at"]
    try:
        parsed = datetime.fromisoformat(at) if isinstance(at, str) and len(at) <= 40 else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError("field 'at' must be an ISO 8601 time with a time zone")
    return Anchor(city=data["city"], seq=data["seq"], head=data["head"], events=data["events"],
                  at=parsed.astimezone(UTC), key=data["key"], sig=data["sig"])


def against_chain(anchor: Anchor, report: ChainReport, anchored_hash: str | None) -> str | None:
    """What is wrong with a chain that verified (`report`) as seen from `anchor`, or None.

    `anchored_hash` is the hash the log holds now at sequence number `anchor.seq` (None: no such
    event). Since the chain verified from its first event, an anchored event that is intact means
    every event up to it is the one that was anchored."""
    when = f"the anchor of {anchor.at:%Y-%m-%d %H:%M:%S} UTC"
    if report.events < anchor.seq:
        cut = anchor.seq - report.events
        return (f"the log ends at event {report.events} but {when} covers {anchor.seq} events: "
                f"at least {cut} {'event was' if cut == 1 else 'events were'} cut off the tail")
    if anchored_hash != anchor.head:
        return (f"event {anchor.seq} no longer has the hash anchored by {when}: events up to it were rewritten "
                "(and the later hashes recomputed) after the anchor")
    return None
