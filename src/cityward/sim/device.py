"""One simulated device's facts and command handling, pure: no I/O, no clock (callers pass `now`).

Facts come from the inventory row plus a per-device random stream keyed by the seed and the
device's base id (without any test prefix), so the same seed gives the same fleet with the same
weaknesses and faults whatever subset of it runs. Command handling follows protocol §1: a
`command_id` is applied at most once, its latest result is kept (the last RESULTS_KEPT ids) and a
repeat is answered from that store, marked `repeat`, and neither applied nor counted again.
Slow work (downloads, installs, reboots) is the runner's job; this module decides and records.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cityward.sim.city import product_releases
from cityward.sim.keys import key_id as make_key_id
from cityward.sim.keys import public_key, verify_signature
from cityward.sim.profile import FAULTS, Profile

RESULTS_KEPT = 256
MAX_IMAGE = 64 * 1024 * 1024
ACTIONS = ("set_config", "set_password", "install_certificate", "upgrade_firmware", "rollback_firmware",
           "reboot", "quarantine", "release")
TERMINAL = frozenset({"succeeded", "failed", "rejected"})
# Actions a quarantined device still takes: the ones that remediate it or end the quarantine.
ALLOWED_IN_QUARANTINE = frozenset({"set_password", "install_certificate", "upgrade_firmware",
                                   "rollback_firmware", "reboot", "quarantine", "release"})
_HEX = frozenset("0123456789abcdef")
_ALPHABET = string.ascii_letters + string.digits


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def config_hash(config: object) -> str:
    """Hex SHA-256 of the canonical JSON (keys sorted, no spaces, Python's default ASCII escaping)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class Certificate:
    subject: str
    issuer: str
    serial: str
    not_after: datetime

    def as_json(self) -> dict[str, str]:
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial,
                "not_after": rfc3339(self.not_after)}


@dataclass(slots=True)
class Job:
    """An accepted command the runner carries out."""

    command_id: str
    action: str
    params: dict[str, Any]


@dataclass(slots=True)
class Reply:
    """The first answer to a command: `job` is set when it was accepted and must now be carried out."""

    result: dict[str, Any]
    repeat: bool
    job: Job | None


@dataclass(slots=True)
class Device:
    id: str
    kind: str
    brand: str
    model: str
    serial: str
    mac: str
    hardware_version: str
    firmware_version: str
    previous_firmware: str | None
    transport: str  # "mqtt" or "http": the channel the simulator plays it over
    rollback: bool
    maker: tuple[str, str]  # the true manufacturer's (brand, model), who signs the firmware
    key_id: str
    seed: int
    fault: str | None
    factory_password: str
    password: str
    credential_state: str
    credential_changed_at: datetime | None
    services: list[str]
    remote_access: list[str]
    certificates: list[Certificate]
    config: dict[str, Any]
    config_hash: str
    boot_at: datetime
    uptime_at_boot: int
    address: str = ""  # HTTP devices: where it is served (host:port)
    boot_count: int = 0
    boot_id: str = ""
    seq: int = 0
    quarantined: bool = False
    quarantine_reason: str = ""
    bricked: bool = False
    applied_commands: int = 0
    applied_by_id: dict[str, int] = field(default_factory=dict)
    results: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if not self.boot_id:
            self.boot_id = self._new_boot_id()

    # --- what it says ------------------------------------------------------------------------

    def actions(self) -> list[str]:
        return [a for a in ACTIONS if a != "rollback_firmware" or self.rollback]

    def hello(self, now: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": 1, "device_id": self.id, "kind": self.kind, "brand": self.brand, "model": self.model,
            "serial": self.serial, "mac": self.mac, "hardware_version": self.hardware_version,
            "firmware_version": self.firmware_version, "protocols": [self.transport],
            "actions": self.actions(), "rollback": self.rollback, "at": rfc3339(now),
        }
        if self.address:
            out["address"] = self.address
        return out

    def active_services(self) -> list[str]:
        return [self.transport] if self.quarantined else list(self.services)

    def uptime(self, now: datetime) -> int:
        return self.uptime_at_boot + max(0, int((now - self.boot_at).total_seconds()))

    def state(self, now: datetime) -> dict[str, Any]:
        """The next state message (its `seq` is one more than the last one's within this boot)."""
        self.seq += 1
        return {
            "v": 1, "device_id": self.id, "seq": self.seq, "boot_id": self.boot_id, "at": rfc3339(now),
            "firmware_version": self.firmware_version, "hardware_version": self.hardware_version,
            "uptime_s": self.uptime(now), "services": self.active_services(),
            "remote_access": [] if self.quarantined else list(self.remote_access),
            "credential": {"state": self.credential_state,
                           "changed_at": rfc3339(self.credential_changed_at) if self.credential_changed_at
                           else None},
            "certificates": [c.as_json() for c in self.certificates],
            "config_hash": self.config_hash, "quarantined": self.quarantined,
            "applied_commands": self.applied_commands,
        }

    def status(self, online: bool, now: datetime) -> dict[str, Any]:
        return {"v": 1, "status": "online" if online else "offline", "at": rfc3339(now)}

    def check_password(self, password: str) -> bool:
        return password == self.password

    # --- commands ----------------------------------------------------------------------------

    def receive(self, payload: object, now: datetime) -> Reply | str:
        """Answer a command payload; a string is the reason it was dropped without an answer."""
        if self.bricked:
            return "bricked"
        if not isinstance(payload, dict):
            return "not a JSON object"
        if payload.get("v") != 1:
            return "unknown version"
        command_id = payload.get("command_id")
        if not isinstance(command_id, str) or not 0 < len(command_id) <= 128:
            return "no command_id"
        stored = self.results.get(command_id)
        if stored is not None:
            return Reply({**stored, "repeat": True}, True, None)
        action = payload.get("action")
        expires = payload.get("expires_at")
        if expires is not None:
            deadline = parse_time(expires)
            if deadline is None:
                return Reply(self.record(command_id, "rejected", now, detail="bad expires_at"), False, None)
            if deadline <= now:
                return Reply(self.record(command_id, "rejected", now, detail="expired"), False, None)
        if action not in ACTIONS or (action == "rollback_firmware" and not self.rollback):
            detail = "rollback not supported" if action == "rollback_firmware" else "unknown action"
            return Reply(self.record(command_id, "rejected", now, detail=detail), False, None)
        params = payload.get("params", {})
        if params is None:
            params = {}
        problem = "params must be an object" if not isinstance(params, dict) else self._check(action, params)
        if problem is not None:
            return Reply(self.record(command_id, "rejected", now, detail=f"bad params: {problem}"), False, None)
        if self.quarantined and action not in ALLOWED_IN_QUARANTINE:
            return Reply(self.record(command_id, "rejected", now, detail="quarantined"), False, None)
        job = Job(command_id, str(action), dict(params))
        return Reply(self.record(command_id, "accepted", now), False, job)

    def _check(self, action: str, p: dict[str, Any]) -> str | None:
        if action == "set_config":
            if not isinstance(p.get("config"), dict):
                return "config must be an object"
            if not isinstance(p.get("config_hash"), str):
                return "config_hash must be a string"
        elif action == "set_password":
            pw = p.get("password")
            if not isinstance(pw, str) or not 16 <= len(pw) <= 128:
                return "password must be a string of 16 to 128 characters"
        elif action == "install_certificate":
            # Protocol v1 has no CSR variant (a result's `detail` cannot carry a PEM).
            for name in ("certificate", "private_key"):
                if not isinstance(p.get(name), str):
                    return f"{name} (PEM) is required"
        elif action == "upgrade_firmware":
            for name in ("url", "version", "sha256", "signature", "key_id"):
                if not isinstance(p.get(name), str) or not p[name]:
                    return f"{name} must be a non-empty string"
            size = p.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_IMAGE:
                return f"size must be an integer between 1 and {MAX_IMAGE}"
            digest = p["sha256"].lower()
            if len(digest) != 64 or not set(digest) <= _HEX:
                return "sha256 must be 64 hex digits"
            url = p["url"]
            if url == "push":
                if self.transport != "http":
                    return "url push needs the HTTP transport"
            elif not url.startswith(("http://", "https://")):
                return "url must be http(s):// or push"
        elif action == "quarantine" and p.get("reason") is not None and not isinstance(p.get("reason"), str):
            return "reason must be a string"
        return None

    def record(self, command_id: str, status: str, now: datetime, *, progress: int | None = None,
               detail: str | None = None) -> dict[str, Any]:
        """Store and return the latest result of a command (nothing after a terminal one)."""
        last = self.results.get(command_id)
        if last is not None and last["status"] in TERMINAL:
            return last
        result: dict[str, Any] = {"v": 1, "device_id": self.id, "command_id": command_id, "status": status,
                                  "at": rfc3339(now), "repeat": False}
        if progress is not None:
            result["progress"] = progress
        if detail is not None:
            result["detail"] = detail
        self.results[command_id] = result
        self.results.move_to_end(command_id)
        while len(self.results) > RESULTS_KEPT:
            self.results.popitem(last=False)
        return result

    def latest(self, command_id: str) -> dict[str, Any] | None:
        return self.results.get(command_id)

    def _applied(self, job: Job, now: datetime, detail: str | None = None) -> dict[str, Any]:
        self.applied_commands += 1
        self.applied_by_id[job.command_id] = self.applied_by_id.get(job.command_id, 0) + 1
        return self.record(job.command_id, "succeeded", now, progress=100, detail=detail)

    def apply(self, job: Job, now: datetime) -> dict[str, Any]:
        """Carry out an accepted command that needs no download: returns its terminal result."""
        p = job.params
        if job.action == "set_config":
            if config_hash(p["config"]) != p["config_hash"].lower():
                return self.record(job.command_id, "rejected", now, detail="config_hash mismatch")
            self.config = dict(p["config"])
            self.config_hash = config_hash(self.config)
            return self._applied(job, now)
        if job.action == "set_password":
            self.password = p["password"]
            self.credential_state = "unique"
            self.credential_changed_at = now
            return self._applied(job, now)
        if job.action == "install_certificate":
            return self._install_certificate(job, now)
        if job.action == "rollback_firmware":
            if self.previous_firmware is None:
                return self.record(job.command_id, "failed", now, detail="no previous firmware kept")
            self.firmware_version, self.previous_firmware = self.previous_firmware, self.firmware_version
            self.reboot(now)
            return self._applied(job, now)
        if job.action == "reboot":
            self.reboot(now)
            return self._applied(job, now)
        if job.action == "quarantine":
            self.quarantined = True
            self.quarantine_reason = p.get("reason") or ""
            return self._applied(job, now)
        if job.action == "release":
            self.quarantined = False
            self.quarantine_reason = ""
            return self._applied(job, now)
        raise ValueError(f"{job.action} is not applied synchronously")

    def _install_certificate(self, job: Job, now: datetime) -> dict[str, Any]:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        p = job.params
        try:
            cert = x509.load_pem_x509_certificate(p["certificate"].encode())
            key = serialization.load_pem_private_key(p["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            return self.record(job.command_id, "rejected", now, detail="bad params: unreadable PEM")
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if (key.public_key().public_bytes(serialization.Encoding.PEM, pub)
                != cert.public_key().public_bytes(serialization.Encoding.PEM, pub)):
            return self.record(job.command_id, "rejected", now,
                               detail="bad params: private key does not match the certificate")
        self.certificates = [Certificate(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                                         format(cert.serial_number, "x"), cert.not_valid_after_utc)]
        return self._applied(job, now)

    # --- firmware ----------------------------------------------------------------------------

    def verify_image(self, job: Job, image: bytes) -> str | None:
        """Protocol §4 checks; the rejection detail, or None when the image may be installed."""
        p = job.params
        if len(image) != p["size"]:
            return "size mismatch"
        digest = hashlib.sha256(image).hexdigest()
        if digest != p["sha256"].lower():
            return "hash mismatch"
        if p["key_id"] != self.key_id:
            return "unknown key"
        brand, model = self.maker
        if not verify_signature(public_key(brand, self.seed), brand, model, p["version"], digest, p["signature"]):
            return "bad signature"
        return None

    def install_firmware(self, job: Job, now: datetime) -> dict[str, Any]:
        """Boot into the verified new version (the old one is kept for rollback)."""
        self.previous_firmware = self.firmware_version if self.rollback else None
        self.firmware_version = job.params["version"]
        self.reboot(now)
        return self._applied(job, now)

    def reboot(self, now: datetime) -> None:
        self.boot_count += 1
        self.boot_id = self._new_boot_id()
        self.seq = 0
        self.boot_at = now
        self.uptime_at_boot = 0

    def _new_boot_id(self) -> str:
        digest = hashlib.sha256(f"boot/{self.seed}/{self.id}/{self.boot_count}".encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


# --- building a device from its inventory row ----------------------------------------------------


def _kind_config(kind: str, rng: random.Random) -> dict[str, Any]:
    config: dict[str, Any] = {
        "report_interval_s": rng.choice((60, 300, 900)), "ntp_server": "ntp.aurelia.lan",
        "log_level": rng.choice(("info", "info", "debug", "warning")), "telemetry": True,
    }
    extra: dict[str, dict[str, Any]] = {
        "streetlight": {"dim_level": rng.choice((60, 80, 100)), "schedule": "dusk-dawn"},
        "camera": {"resolution": rng.choice(("1080p", "4k")), "retention_days": rng.choice((7, 14, 30))},
        "env_sensor": {"sample_interval_s": rng.choice((30, 60, 120))},
        "waste_bin": {"fill_alert_pct": rng.choice((75, 80, 90))},
        "parking_sensor": {"sensitivity": rng.choice(("low", "medium", "high"))},
        "traffic_controller": {"plan": rng.choice(("A", "B", "peak")), "failsafe": "flash-amber"},
        "gateway": {"uplink": rng.choice(("lte", "fibre")), "lorawan_region": "EU868"},
        "ev_charger": {"max_current_a": rng.choice((16, 32)), "ocpp_url": "wss://ocpp.aurelia.lan"},
    }
    config.update(extra.get(kind, {}))
    return config


def build_device(row: dict[str, str], *, seed: int, profile: Profile, anchor: datetime,
                 base_id: str | None = None) -> Device:
    """The device an inventory row describes; `anchor` is the simulation's start ("now" at boot).

    `base_id` (the id without a test prefix) keys the random stream, so a prefix changes no fact.
    """
    device_id = row["id"]
    rng = random.Random(f"device/{seed}/{base_id or device_id}")  # noqa: S311 - a simulation
    brand, model = row["brand"], row["model"]
    product = profile.product(brand, model)
    maker = profile.root(brand, model)
    transport = "http" if row.get("protocol") == "http" else "mqtt"

    r, fault, edge = rng.random(), None, 0.0
    for name in FAULTS:
        edge += profile.fault_share(name)
        if r < edge:
            fault = name
            break

    factory = product.default_password if product else "admin"
    r = rng.random()
    changed_at: datetime | None
    if r < profile.default_credentials:
        state, password, changed_at = "default", factory, None
    elif r < profile.default_credentials + profile.weak_credentials:
        state, password = "weak", rng.choice(profile.weak_passwords)
        changed_at = anchor - timedelta(days=rng.randint(1, 1500), seconds=rng.randint(0, 86399))
    else:
        state, password = "unique", "".join(rng.choice(_ALPHABET) for _ in range(24))
        changed_at = anchor - timedelta(days=rng.randint(1, 1500), seconds=rng.randint(0, 86399))

    services = [transport] + [name for name, share in profile.services if rng.random() < share]
    remote = [name for name, share in profile.remote_access if rng.random() < share]

    r = rng.random()
    certs: list[Certificate] = []
    if r >= profile.cert_none:
        if r < profile.cert_none + profile.cert_expired:
            not_after = anchor - timedelta(days=rng.randint(1, 400))
        elif r < profile.cert_none + profile.cert_expired + profile.cert_expiring:
            not_after = anchor + timedelta(days=rng.randint(1, 29))
        else:
            not_after = anchor + timedelta(days=rng.randint(31, 900))
        not_after = not_after.replace(microsecond=0)
        certs.append(Certificate(f"CN={device_id}", f"CN={maker[0]} CA", f"{rng.getrandbits(64):016x}", not_after))

    rollback = product.rollback if product else False
    previous: str | None = None
    if rollback:
        releases = product_releases(profile, brand, model)
        if row["firmware_version"] in releases and releases.index(row["firmware_version"]) > 0:
            previous = releases[releases.index(row["firmware_version"]) - 1]
    config = _kind_config(row["kind"], rng)
    return Device(
        id=device_id, kind=row["kind"], brand=brand, model=model, serial=row["serial"], mac=row["mac"],
        hardware_version=row["hardware_version"], firmware_version=row["firmware_version"],
        previous_firmware=previous, transport=transport, rollback=rollback, maker=maker,
        key_id=make_key_id(maker[0], seed), seed=seed, fault=fault, factory_password=factory,
        password=password, credential_state=state, credential_changed_at=changed_at,
        services=services, remote_access=remote, certificates=certs, config=config,
        config_hash=config_hash(config), boot_at=anchor,
        uptime_at_boot=rng.randint(600, 90 * 86400),
        address=row["address"] if transport == "http" else "",
    )


__all__ = ["ACTIONS", "RESULTS_KEPT", "Certificate", "Device", "Job", "Reply", "build_device", "config_hash",
           "parse_time", "rfc3339"]
