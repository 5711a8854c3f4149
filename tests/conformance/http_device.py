"""An HTTP device written from docs/protocol.md alone (§1, §3): Python's standard library only.

It imports nothing of cityward on purpose (tests/conformance/test_conformance.py checks that):
what it does is what the document says a device does, so a test that runs it against the platform
fails when the document and the platform drift apart. Each behaviour cites the section it follows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 1024  # "a receiver rejects a payload over 64 KiB"
LOCK_FAILURES, LOCK_WINDOW, LOCK_SECONDS = 5, 60.0, 60.0  # §3: five failures in a minute, locked a minute
PREFIX = "/cityward/v1"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(value: Any) -> str:
    """§1 "Canonical JSON", written out by hand from its rules (no json.dumps), as a C or
    JavaScript device would."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise ValueError("integer out of range")
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        # keys ordered by Unicode code point (not by UTF-16 unit)
        return "{" + ",".join(f"{_string(k)}:{canonical_json(value[k])}" for k in sorted(value)) + "}"
    raise ValueError(f"not allowed in a configuration: {type(value).__name__}")


_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif code < 0x20 or code > 0x7E:  # controls, DEL and everything beyond ASCII
            if code > 0xFFFF:  # outside the basic plane: a UTF-16 surrogate pair, each escaped
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class HttpDevice:
    """One device on 127.0.0.1 and a free port; `apply_delay` seconds between accepting a command
    and applying it (0: applied as soon as the 202 is sent)."""

    def __init__(self, device_id: str, password: str, *, firmware: str = "1.0.0", apply_delay: float = 0.0,
                 brand: str = "Lumo", model: str = "L100", serial: str = "S1",
                 mac: str = "02:00:00:00:00:01") -> None:
        self.id, self.password, self.firmware = device_id, password, firmware
        self.brand, self.model, self.serial, self.mac = brand, model, serial, mac
        self.apply_delay = apply_delay
        self.boot_id, self.seq = "boot-1", 0
        self.credential_state = "default"
        self.changed_at: str | None = None
        self.results: dict[str, dict[str, Any]] = {}  # command id → latest result (kept ≥ 256)
        self.applied_commands = 0
        self.auth_failures: list[float] = []
        self.failed_logins = 0  # every 401 answered, for tests to read
        self.locked_until = 0.0
        self.requests = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpDevice:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the payloads (§2 `hello` and `state`, served over HTTP) -------------------------------

    def hello(self) -> dict[str, Any]:
        return {"v": 1, "device_id": self.id, "kind": "streetlight", "brand": self.brand, "model": self.model,
                "serial": self.serial, "mac": self.mac, "firmware_version": self.firmware, "protocols": ["http"],
                "actions": ["set_password", "reboot"], "rollback": False, "address": self.address, "at": now()}

    def state(self) -> dict[str, Any]:
        self.seq += 1  # §2: seq grows by one per state message within one boot
        return {"v": 1, "device_id": self.id, "seq": self.seq, "boot_id": self.boot_id, "at": now(),
                "firmware_version": self.firmware, "uptime_s": 10, "services": ["http"], "remote_access": [],
                "credential": {"state": self.credential_state, "changed_at": self.changed_at},
                "certificates": [], "config_hash": None, "quarantined": False,
                "applied_commands": self.applied_commands}

    # --- commands (§1) --------------------------------------------------------------------------

    def _result(self, command_id: str, status: str, detail: str | None = None,
                progress: int | None = None) -> dict[str, Any]:
        return {"v": 1, "device_id": self.id, "command_id": command_id, "status": status, "progress": progress,
                "detail": detail, "at": now(), "repeat": False}

    def submit(self, command: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """§3: 202 with the first result; a repeat id → 200 with the stored result, `repeat: true`."""
        command_id = command.get("command_id")
        if not isinstance(command_id, str) or not command_id:
            return 400, {"v": 1, "error": "command_id missing"}
        with self.lock:
            if command_id in self.results:
                return 200, {**self.results[command_id], "repeat": True}
            expires = command.get("expires_at")
            if isinstance(expires, str) and expires < now():  # §1: past expires_at → rejected, not applied
                self.results[command_id] = self._result(command_id, "rejected", "expired")
                return 202, self.results[command_id]
            action, params = command.get("action"), command.get("params") or {}
            if action == "set_password":
                password = params.get("password")
                if not isinstance(password, str) or not 16 <= len(password) <= 128:
                    self.results[command_id] = self._result(command_id, "rejected", "bad params: password")
                    return 202, self.results[command_id]
            elif action != "reboot":
                self.results[command_id] = self._result(command_id, "rejected", "unknown action")
                return 202, self.results[command_id]
            self.results[command_id] = self._result(command_id, "accepted")
            first = dict(self.results[command_id])
        threading.Timer(self.apply_delay, self._apply, (command_id, action, params)).start()
        return 202, first

    def _apply(self, command_id: str, action: str, params: dict[str, Any]) -> None:
        with self.lock:
            if action == "set_password":
                # §1: the new password is in force from now; credential.state becomes unique.
                self.password = params["password"]
                self.credential_state, self.changed_at = "unique", now()
                detail = "password changed"
            else:
                self.boot_id = f"boot-{int(self.boot_id.split('-')[1]) + 1}"  # §2: a restart is a new boot
                self.seq = 0
                detail = "rebooted"
            self.applied_commands += 1
            self.results[command_id] = self._result(command_id, "succeeded", detail, 100)

    # --- authentication (§3) --------------------------------------------------------------------

    def authenticate(self, header: str | None) -> int:
        """200, 401 or 429. The lockout covers the whole HTTP API of this device, whoever asks."""
        moment = time.monotonic()
        with self.lock:
            if self.locked_until > moment:
                return 429
            user, password = "", ""
            if header and header[:6].lower() == "basic ":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                    user, _sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            if user == "admin" and password == self.password:
                return 200
            self.failed_logins += 1
            self.auth_failures = [t for t in self.auth_failures if moment - t < LOCK_WINDOW] + [moment]
            if len(self.auth_failures) >= LOCK_FAILURES:
                self.locked_until, self.auth_failures = moment + LOCK_SECONDS, []
            return 401

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        device = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _gate(self) -> bool:
                device.requests += 1
                code = device.authenticate(self.headers.get("authorization"))
                if code == 429:
                    retry = max(1, int(device.locked_until - time.monotonic()) + 1)
                    self._send(429, {"v": 1, "error": "locked"}, {"Retry-After": str(retry)})
                    return False
                if code == 401:
                    self._send(401, {"v": 1, "error": "authentication required"},
                               {"WWW-Authenticate": 'Basic realm="cityward"'})
                    return False
                return True

            def do_GET(self) -> None:
                if self.path == f"{PREFIX}/info":  # §3: no authentication
                    device.requests += 1
                    self._send(200, device.hello())
                    return
                if not self._gate():
                    return
                if self.path == f"{PREFIX}/state":
                    with device.lock:
                        self._send(200, device.state())
                elif self.path.startswith(f"{PREFIX}/commands/"):
                    found = device.results.get(self.path.rsplit("/", 1)[1])
                    if found is None:
                        self._send(404, {"v": 1, "error": "unknown command_id"})
                    else:
                        self._send(200, found)
                else:
                    self._send(404, {"v": 1, "error": "not found"})

            def do_POST(self) -> None:
                if not self._gate():
                    return
                if self.path != f"{PREFIX}/commands":
                    self._send(404, {"v": 1, "error": "not found"})
                    return
                length = self.headers.get("content-length", "")
                if not length.isdigit():
                    self._send(400, {"v": 1, "error": "length required"})
                    return
                if int(length) > MAX_BODY:
                    self._send(413, {"v": 1, "error": f"body over {MAX_BODY} bytes"})
                    return
                try:
                    command = json.loads(self.rfile.read(int(length)))
                except (ValueError, UnicodeDecodeError):
                    self._send(400, {"v": 1, "error": "malformed JSON"})
                    return
                if not isinstance(command, dict) or command.get("v") != 1:
                    self._send(400, {"v": 1, "error": "not a v1 command"})
                    return
                status, body = device.submit(command)
                self._send(status, body)

        return Handler


def config_hash(config: Any) -> str:
    """§1: lowercase hex SHA-256 of the UTF-8 (here: ASCII) bytes of the canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode("ascii")).hexdigest()
