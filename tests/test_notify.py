"""Notification delivery on real sockets: signed webhooks to a local HTTP(S) receiver and e-mail to a
local aiosmtpd server. Every failure is a Delivery with a reason, never an exception, and no secret
shows up in a repr, a Delivery or a log line."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cityward.adapters.notify import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    EmailTarget,
    Notification,
    SmtpSettings,
    WebhookTarget,
    _is_public,
    canonical_json,
    deliver_webhooks,
    send_emails,
    send_emails_async,
    sign,
    signature_header,
    verify,
)

SECRET = secrets.token_urlsafe(24)  # generated per run: no credential lives in the repository
PASSWORD = secrets.token_urlsafe(16)


def note(key: str = "exp-1", *, kind: str = "vulnerability.exposure", subject: str = "CVE-2026-0001 on 3 devices",
         payload: dict[str, Any] | None = None) -> Notification:
    return Notification(
        kind=kind, recipient_org="Signal Integrators GmbH", subject=subject,
        text="Three traffic controllers run firmware 2.1.0.\nUpgrade to 2.1.4.\n",
        payload=payload if payload is not None else {"advisory": "CVE-2026-0001", "devices": ["TL-1", "TL-2"], "n": 3},
        idempotency_key=key,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# A certificate for "localhost" only (no IP address in it), trusted by the client side of the tests


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def server(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return Cert(folder / "cert.pem", folder / "key.pem")


# ---------------------------------------------------------------------------------------------
# The HTTP receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    base: str
    records: list[Received] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stopped reading: expected for the large bodies
                self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = self.path
            verified = verify(SECRET, self.headers.get(SIGNATURE_HEADER, ""), body)
            with rx.lock:
                rx.records.append(Received(path, dict(self.headers.items()), body, verified))
                rx.hits[path] += 1
                n = rx.hits[path]
                rx.in_flight += 1
                rx.max_in_flight = max(rx.max_in_flight, rx.in_flight)
            try:
                if path == "/ok":
                    self.reply(204 if verified else 401)
                elif path == "/slow":
                    time.sleep(0.05)
                    self.reply(200)
                elif path == "/flaky":
                    self.reply(500, b"try again") if n <= 2 else self.reply(200, b"ok")
                elif path == "/busy":
                    self.reply(429, headers={"Retry-After": "0"}) if n == 1 else self.reply(202)
                elif path == "/bad":
                    self.reply(400, b'{"error":"unknown organization"}')
                elif path == "/big":
                    self.reply(500, b"x" * 2_000_000)
                elif path == "/hang":
                    rx.release.wait(5)
                elif path == "/redirect":
                    self.reply(302, headers={"Location": "/ok"})
                else:
                    self.reply(404)
            finally:
                with rx.lock:
                    rx.in_flight -= 1

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # TLS handshakes refused by the client, clients gone away


def serve(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    rx = Receiver(base=f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}")
    server.RequestHandlerClass = make_handler(rx)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        rx.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
def tls_receiver(cert: Cert) -> Iterator[Receiver]:
    yield from serve(cert.server())


def hook(rx: Receiver, path: str, secret: str = SECRET) -> WebhookTarget:
    return WebhookTarget(url=rx.base + path, secret=secret)


def deliver(items: list[tuple[Notification, WebhookTarget]], **kwargs: Any) -> list[Delivery]:
    kwargs.setdefault("allow_private", True)
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 2.0)
    return asyncio.run(deliver_webhooks(items, **kwargs))


# ---------------------------------------------------------------------------------------------
# Signatures


def test_signature_scheme_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = canonical_json({"b": 1, "a": [1, 2]})
    assert body == b'{"a":[1,2],"b":1}'
    assert sign(SECRET, 1_700_000_000, body) == hmac.new(
        SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    header = signature_header(SECRET, 1_700_000_000, body)
    assert header == f"t=1700000000,v1={sign(SECRET, 1_700_000_000, body)}"
    assert verify(SECRET, header, body, now=1_700_000_000 + 299)
    assert verify(SECRET, " t=1700000000 , v1=" + "0" * 64 + ", v1=" + sign(SECRET, 1_700_000_000, body), body,
                  now=1_700_000_000)  # several signatures (secret rotation): one must match


def test_verify_rejects_tampering_wrong_secret_replays_and_garbage() -> None:
    t = 1_700_000_000
    body = canonical_json({"advisory": "CVE-2026-0001"})
    header = signature_header(SECRET, t, body)
    assert not verify(SECRET, header, body + b" ", now=t)  # tampered body
    assert not verify(SECRET, header, body.replace(b"0001", b"0002"), now=t)
    assert not verify("another-secret", header, body, now=t)  # wrong secret
    assert not verify(SECRET, header, body, now=t + 301)  # stale: replayed later
    assert not verify(SECRET, header, body, now=t - 301)  # from the future
    assert not verify(SECRET, header.replace("t=1700000000", "t=1700000001"), body, now=t)  # timestamp moved
    assert not verify("", signature_header("", t, body), body, now=t)  # an empty secret never verifies
    for garbage in ["", "v1=" + sign(SECRET, t, body), f"t={t}", f"t=abc,v1={sign(SECRET, t, body)}",
                    f"t={t},t={t},v1={sign(SECRET, t, body)}", f"t={t},v1={sign(SECRET, t, body).upper()}",
                    f"t={t},v1=é{sign(SECRET, t, body)[1:]}", f"t=\u0661\u0667,v1={sign(SECRET, t, body)}"]:
        assert not verify(SECRET, garbage, body, now=t), garbage


# ---------------------------------------------------------------------------------------------
# Webhooks


def test_webhooks_are_signed_and_delivered_in_order(receiver: Receiver) -> None:
    items = [(note(f"exp-{i}", payload={"i": i, "z": "ü"}), hook(receiver, "/ok")) for i in range(5)]
    results = deliver(items)
    assert [d.idempotency_key for d in results] == [f"exp-{i}" for i in range(5)]
    assert all(d.ok and d.status == 204 and d.attempts == 1 and d.error is None for d in results)
    assert all(d.channel == "webhook" and d.target == receiver.base + "/ok" for d in results)
    assert len(receiver.records) == 5 and all(r.verified for r in receiver.records)
    first = next(r for r in receiver.records if r.headers[DELIVERY_HEADER] == "exp-0")
    assert first.body == b'{"i":0,"z":"\\u00fc"}'
    assert json.loads(first.body) == {"i": 0, "z": "ü"}
    assert first.headers[EVENT_HEADER] == "vulnerability.exposure"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Host"] == receiver.base.removeprefix("http://")
    assert first.headers["User-Agent"].startswith("cityward-notify/")


def test_wrong_secret_is_seen_by_the_receiver(receiver: Receiver) -> None:
    [d] = deliver([(note(), hook(receiver, "/ok", secret="not-the-receivers-secret"))])
    assert not d.ok and d.status == 401 and d.attempts == 1
    assert receiver.records[0].verified is False


def test_5xx_is_retried_with_the_same_delivery_id_and_fresh_signatures(receiver: Receiver) -> None:
    [d] = deliver([(note("flaky-1"), hook(receiver, "/flaky"))], retries=2)
    assert d.ok and d.status == 200 and d.attempts == 3
    assert receiver.hits["/flaky"] == 3
    assert {r.headers[DELIVERY_HEADER] for r in receiver.records} == {"flaky-1"}
    assert all(r.verified for r in receiver.records)


def test_retries_exhausted_report_the_last_status(receiver: Receiver) -> None:
    [d] = deliver([(note(), hook(receiver, "/flaky"))], retries=1)
    assert not d.ok and d.status == 500 and d.attempts == 2 and d.error == "HTTP 500: try again"


def test_429_is_retried(receiver: Receiver) -> None:
    [d] = deliver([(note(), hook(receiver, "/busy"))])
    assert d.ok and d.status == 202 and d.attempts == 2


def test_4xx_fails_without_retry(receiver: Receiver) -> None:
    [d] = deliver([(note(), hook(receiver, "/bad"))], retries=3)
    assert not d.ok and d.status == 400 and d.attempts == 1
    assert d.error == 'HTTP 400: {"error":"unknown organization"}'
    assert receiver.hits["/bad"] == 1


def test_a_huge_response_body_is_not_read_whole(receiver: Receiver) -> None:
    started = time.monotonic()
    [d] = deliver([(note(), hook(receiver, "/big"))], retries=0)
    assert not d.ok and d.status == 500 and d.error is not None and len(d.error) < 250
    assert time.monotonic() - started < 2


def test_a_hanging_receiver_times_out(receiver: Receiver) -> None:
    started = time.monotonic()
    [d] = deliver([(note(), hook(receiver, "/hang"))], timeout=0.3, retries=1)
    assert not d.ok and d.status is None and d.attempts == 2
    assert d.error is not None and "time" in d.error.lower()
    assert receiver.hits["/hang"] == 2
    assert time.monotonic() - started < 2


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    [d] = deliver([(note(), hook(receiver, "/redirect"))], retries=2)
    assert not d.ok and d.status == 302 and d.attempts == 1 and "redirect" in (d.error or "")
    assert receiver.hits == Counter({"/redirect": 1})


def test_connection_refused_is_retried_then_fails() -> None:
    port = free_port()
    [d] = deliver([(note(), WebhookTarget(f"http://127.0.0.1:{port}/x", SECRET))], retries=1)
    assert not d.ok and d.status is None and d.attempts == 2 and "ConnectError" in (d.error or "")


@pytest.mark.parametrize("url", ["ftp://files.example/hook", "file:///etc/passwd", "gopher://x.example/",
                                 "hooks.example/no-scheme", "http:///no-host"])
def test_non_http_urls_are_refused(url: str) -> None:
    [d] = deliver([(note(), WebhookTarget(url, SECRET))], allow_private=False)
    assert not d.ok and d.attempts == 0 and d.status is None and d.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "192.168.0.10", "172.16.5.5",
                                  "169.254.169.254", "100.64.0.1", "0.0.0.0", "[::1]", "[fe80::1]", "[fd00::1]",
                                  "[::ffff:127.0.0.1]", "224.0.0.1"])
def test_private_addresses_are_refused_without_allow_private(receiver: Receiver, host: str) -> None:
    port = receiver.base.rsplit(":", 1)[1]
    [d] = deliver([(note(), WebhookTarget(f"http://{host}:{port}/ok", SECRET))], allow_private=False)
    assert not d.ok and d.attempts == 0 and "non-public" in (d.error or "")
    assert receiver.records == []


def test_public_address_classification() -> None:
    assert _is_public(ipaddress.ip_address("93.184.215.14"))
    assert _is_public(ipaddress.ip_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c"))
    for private in ["2002:7f00:1::", "2002:a00:1::", "::ffff:10.0.0.1", "198.18.0.1", "240.0.0.1",
                    "255.255.255.255", "ff02::1", "::"]:
        assert not _is_public(ipaddress.ip_address(private)), private


def test_credentials_in_urls_are_refused_and_never_reported() -> None:
    [d] = deliver([(note(), WebhookTarget("https://user:hunter2@hooks.example/x?token=abc", SECRET))])
    assert not d.ok and d.attempts == 0 and "credentials" in (d.error or "")
    assert "hunter2" not in repr(d) and "token" not in repr(d)
    assert d.target == "https://hooks.example/x"


def test_bad_payload_and_header_injection_are_refused(receiver: Receiver) -> None:
    results = deliver([
        (note("nan", payload={"score": float("nan")}), hook(receiver, "/ok")),
        (note("obj", payload={"when": object()}), hook(receiver, "/ok")),
        (note("inj", kind="x\r\nX-Evil: 1"), hook(receiver, "/ok")),
        (note("key with space"), hook(receiver, "/ok")),
        (note("fine"), hook(receiver, "/ok")),
    ])
    assert [d.ok for d in results] == [False, False, False, False, True]
    assert all(d.attempts == 0 for d in results[:4])
    assert len(receiver.records) == 1


def test_concurrency_is_bounded(receiver: Receiver) -> None:
    items = [(note(f"c-{i}"), hook(receiver, "/slow")) for i in range(12)]
    results = deliver(items, concurrency=3)
    assert all(d.ok for d in results)
    assert [d.idempotency_key for d in results] == [f"c-{i}" for i in range(12)]
    assert 1 <= receiver.max_in_flight <= 3


def test_https_checks_the_certificate_against_the_host_name(tls_receiver: Receiver, cert: Cert) -> None:
    # The request goes to the address that was checked, but the certificate must match "localhost".
    [d] = deliver([(note(), hook(tls_receiver, "/ok"))], ssl_context=cert.client())
    assert d.ok and d.status == 204, d.error
    assert tls_receiver.records[0].verified
    assert tls_receiver.records[0].headers["Host"] == tls_receiver.base.removeprefix("https://")
    # The same server by address: the certificate does not name 127.0.0.1, so no delivery.
    port = tls_receiver.base.rsplit(":", 1)[1]
    [d] = deliver([(note(), WebhookTarget(f"https://127.0.0.1:{port}/ok", SECRET))], ssl_context=cert.client(),
                  retries=0)
    assert not d.ok and "CERTIFICATE_VERIFY_FAILED" in (d.error or "")
    # And the system trust store does not know the test certificate.
    [d] = deliver([(note(), hook(tls_receiver, "/ok"))], retries=0)
    assert not d.ok and "CERTIFICATE_VERIFY_FAILED" in (d.error or "")
    assert len(tls_receiver.records) == 1


def test_no_secret_in_reprs_deliveries_or_logs(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    target = hook(receiver, "/ok")
    assert SECRET not in repr(target) and SECRET not in str(target)
    results = deliver([(note("a"), target), (note("b"), hook(receiver, "/bad")), (note("c"), hook(receiver, "/hang"))],
                      timeout=0.3, retries=0)
    assert [d.ok for d in results] == [True, False, False]
    assert SECRET not in repr(results)
    assert caplog.records and SECRET not in caplog.text
    settings = SmtpSettings("localhost", 25, "cityward@city.example", username="u", password=PASSWORD)
    assert PASSWORD not in repr(settings)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        WebhookTarget("https://hooks.example/x", "")
    with pytest.raises(ValueError):
        asyncio.run(deliver_webhooks([], concurrency=0))
    assert asyncio.run(deliver_webhooks([])) == []


# ---------------------------------------------------------------------------------------------
# E-mail


@dataclass
class Mail:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage


@dataclass
class Mailbox:
    messages: list[Mail] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append(Mail(session.peer, envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 queued"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.login == b"cityward" and data.password == PASSWORD.encode(), handled=False)


class LocalController(Controller):
    """aiosmtpd on an ephemeral port: the port is read back from the bound socket."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def smtp_server(box: Mailbox, **kwargs: Any) -> Iterator[LocalController]:
    controller = LocalController(box, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def plain_smtp(mailbox: Mailbox) -> Iterator[LocalController]:
    yield from smtp_server(mailbox)


@pytest.fixture
def tls_smtp(mailbox: Mailbox, cert: Cert) -> Iterator[LocalController]:
    yield from smtp_server(mailbox, tls_context=cert.server(), require_starttls=True, auth_required=True,
                           authenticator=mailbox.authenticate)


def plain(controller: LocalController) -> SmtpSettings:
    return SmtpSettings("127.0.0.1", controller.port, "cityward@city.example", starttls=False, timeout=3)


def test_two_emails_over_one_connection(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    items = [(note("exp-7", subject="3 Ampeln in Zürich betroffen"), EmailTarget("security@integrator.example")),
             (note("units-1", kind="vulnerability.manufacturer_units", subject="CVE-2026-0001: 212 units"),
              EmailTarget("psirt@maker.example"))]
    results = send_emails(items, plain(plain_smtp))
    assert [(d.ok, d.status, d.attempts, d.error) for d in results] == [(True, 250, 1, None)] * 2
    assert [d.target for d in results] == ["security@integrator.example", "psirt@maker.example"]
    assert all(d.channel == "email" for d in results)
    first, second = mailbox.messages
    assert first.peer == second.peer  # same client port: one connection
    assert first.mail_from == "cityward@city.example" and first.rcpt_tos == ["security@integrator.example"]
    assert first.message["Subject"] == "3 Ampeln in Zürich betroffen"
    assert first.message["Message-ID"] == "<exp-7@city.example>"
    assert second.message["Message-ID"] == "<units-1@city.example>"
    assert first.message["To"] == "security@integrator.example"
    assert first.message["From"] == "cityward@city.example"
    assert first.message["Auto-Submitted"] == "auto-generated"
    assert first.message[EVENT_HEADER] == "vulnerability.exposure"
    assert second.message[EVENT_HEADER] == "vulnerability.manufacturer_units"
    text = first.message.get_content().replace("\r\n", "\n")
    assert text == "Three traffic controllers run firmware 2.1.0.\nUpgrade to 2.1.4.\n"


def test_message_id_is_stable_and_safe_for_any_key(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    items = [(note("org:7/adv:CVE-2026-0001@v2"), EmailTarget("a@integrator.example")),
             (note("org:7/adv:CVE-2026-0001@v2"), EmailTarget("a@integrator.example"))]
    results = send_emails(items, plain(plain_smtp))
    assert all(d.ok for d in results)
    ids = [m.message["Message-ID"] for m in mailbox.messages]
    assert ids[0] == ids[1] and ids[0].endswith("@city.example>") and "/" not in ids[0]


def test_header_injection_is_refused(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    items = [
        (note("s1", subject="Patch now\r\nBcc: everyone@city.example"), EmailTarget("a@integrator.example")),
        (note("s2", subject="Patch now\nBcc: x@y.example"), EmailTarget("a@integrator.example")),
        (note("r1"), EmailTarget("a@integrator.example\r\nRCPT TO:<spy@evil.example>")),
        (note("r2"), EmailTarget("Someone <a@integrator.example>")),
        (note("r3"), EmailTarget("not an address")),
        (note("k1", kind="exposure\r\nX-Evil: 1"), EmailTarget("a@integrator.example")),
        (note("ok"), EmailTarget("a@integrator.example")),
    ]
    results = send_emails(items, plain(plain_smtp))
    assert [d.ok for d in results] == [False] * 6 + [True]
    assert all(d.attempts == 0 and d.error for d in results[:6])
    assert "CR, LF" in (results[0].error or "") and "CR, LF" in (results[2].error or "")
    assert [m.rcpt_tos for m in mailbox.messages] == [["a@integrator.example"]]
    assert "Bcc" not in mailbox.messages[0].message


def test_a_refused_recipient_fails_alone(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    items = [(note("a"), EmailTarget("one@integrator.example")), (note("b"), EmailTarget("nobody@maker.example")),
             (note("c"), EmailTarget("two@integrator.example"))]
    results = send_emails(items, plain(plain_smtp))
    assert [(d.ok, d.status) for d in results] == [(True, 250), (False, 550), (True, 250)]
    assert "no such user" in (results[1].error or "")
    assert [m.rcpt_tos for m in mailbox.messages] == [["one@integrator.example"], ["two@integrator.example"]]


def test_smtp_server_down_is_a_failed_delivery_not_an_exception() -> None:
    settings = SmtpSettings("127.0.0.1", free_port(), "cityward@city.example", starttls=False, timeout=2)
    results = send_emails([(note("a"), EmailTarget("x@integrator.example")),
                           (note("b"), EmailTarget("y@integrator.example"))], settings)
    assert [d.ok for d in results] == [False, False]
    assert all(d.attempts == 1 and "cannot connect" in (d.error or "") and "Refused" in (d.error or "")
               for d in results)


def test_invalid_sender_fails_everything(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    settings = SmtpSettings("127.0.0.1", plain_smtp.port, "cityward@city.example\r\nX: y", starttls=False)
    [d] = send_emails([(note(), EmailTarget("a@integrator.example"))], settings)
    assert not d.ok and "sender" in (d.error or "")
    assert mailbox.messages == []


def test_starttls_and_auth(tls_smtp: LocalController, mailbox: Mailbox, cert: Cert) -> None:
    settings = SmtpSettings("localhost", tls_smtp.port, "cityward@city.example", username="cityward",
                            password=PASSWORD, starttls=True, ssl_context=cert.client(), timeout=3)
    results = send_emails([(note("a"), EmailTarget("a@integrator.example")),
                           (note("b"), EmailTarget("b@integrator.example"))], settings)
    assert [d.ok for d in results] == [True, True], results
    assert mailbox.logins == [(b"cityward", PASSWORD.encode())]  # one login: one connection
    assert mailbox.messages[0].peer == mailbox.messages[1].peer


def test_wrong_password_fails_without_showing_it(tls_smtp: LocalController, cert: Cert,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = SmtpSettings("localhost", tls_smtp.port, "cityward@city.example", username="cityward",
                            password="wrong-" + PASSWORD, starttls=True, ssl_context=cert.client(), timeout=3)
    [d] = send_emails([(note(), EmailTarget("a@integrator.example"))], settings)
    assert not d.ok and d.status == 535
    assert PASSWORD not in repr(d) and PASSWORD not in caplog.text and PASSWORD not in repr(settings)


def test_starttls_not_offered_is_not_downgraded(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    settings = SmtpSettings("127.0.0.1", plain_smtp.port, "cityward@city.example", starttls=True, timeout=3)
    [d] = send_emails([(note(), EmailTarget("a@integrator.example"))], settings)
    assert not d.ok and "STARTTLS" in (d.error or "")
    assert mailbox.messages == []


def test_untrusted_certificate_is_refused(tls_smtp: LocalController, mailbox: Mailbox) -> None:
    settings = SmtpSettings("localhost", tls_smtp.port, "cityward@city.example", username="cityward",
                            password=PASSWORD, starttls=True, timeout=3)
    [d] = send_emails([(note(), EmailTarget("a@integrator.example"))], settings)
    assert not d.ok and "CERTIFICATE_VERIFY_FAILED" in (d.error or "")
    assert mailbox.logins == []


def test_credentials_are_never_sent_in_clear(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    settings = SmtpSettings("127.0.0.1", plain_smtp.port, "cityward@city.example", username="cityward",
                            password=PASSWORD, starttls=False)
    [d] = send_emails([(note(), EmailTarget("a@integrator.example"))], settings)
    assert not d.ok and "without STARTTLS" in (d.error or "")
    assert mailbox.messages == [] and mailbox.logins == []


def test_send_emails_async(plain_smtp: LocalController, mailbox: Mailbox) -> None:
    [d] = asyncio.run(send_emails_async([(note(), EmailTarget("a@integrator.example"))], plain(plain_smtp)))
    assert d.ok and len(mailbox.messages) == 1
