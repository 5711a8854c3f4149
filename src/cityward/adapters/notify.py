"""Notification delivery: HMAC-signed webhooks over HTTP(S) and e-mail over SMTP.

The service decides who is told what; this adapter only carries a `Notification` to a target and
reports a `Delivery` for each, in input order, without raising for a failed delivery.

Webhooks. The body is the payload as canonical JSON (sorted keys, no spaces, ASCII). Each request
carries:

    X-Cityward-Event: <kind>
    X-Cityward-Delivery: <idempotency key>   (the same on every retry: receivers deduplicate on it)
    X-Cityward-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A receiver checks the signature with `verify` (constant-time, and a timestamp more than `tolerance`
seconds from its clock is refused, which bounds replays). The timestamp is taken per attempt, so a
retry after a back-off is not stale. Redirects are never followed; only http and https are allowed;
unless `allow_private`, every address the host resolves to must be public (no loopback, private,
link-local, shared, reserved or multicast address) and the request goes to the address that was
checked (no second DNS lookup that a rebinding name could answer differently), with the original
host name in the Host header and as the TLS server name.

E-mail. One SMTP connection for a batch (STARTTLS by default, refused rather than downgraded when the
server does not offer it; credentials are never sent without TLS). The Message-ID derives from the
idempotency key, so a re-sent notification has the same Message-ID. Subjects and addresses with CR or
LF (or other control characters) are refused: no header or SMTP command injection.

No secret (webhook secret, SMTP password) appears in a repr, a `Delivery` or a log line.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cityward-Signature"
EVENT_HEADER = "X-Cityward-Event"
DELIVERY_HEADER = "X-Cityward-Delivery"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE = 300
MAX_RESPONSE_BYTES = 64 * 1024
MAX_RETRY_AFTER = 30.0
USER_AGENT = "cityward-notify/1"

_EXCERPT = 200
_MAX_SIGNATURES = 16
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,200}")  # kind and idempotency key: they travel in headers
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # C0 controls (tab allowed) and DEL
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")

Channel = Literal["webhook", "email"]


@dataclass(frozen=True)
class Notification:
    kind: str  # "vulnerability.exposure", "vulnerability.manufacturer_units", ...
    recipient_org: str
    subject: str
    text: str  # plain-text body of the e-mail
    payload: dict[str, Any] = field(hash=False)  # JSON body of the webhook
    idempotency_key: str


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("a webhook target needs a signing secret")


@dataclass(frozen=True)
class EmailTarget:
    address: str  # a bare addr-spec: "security@integrator.example"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str  # bare addr-spec, also the envelope sender
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)  # e.g. a private CA
    local_hostname: str | None = None  # EHLO name; the machine's FQDN when None


@dataclass(frozen=True)
class Delivery:
    idempotency_key: str
    channel: Channel
    target: str  # the URL without credentials, query or fragment; or the e-mail address
    ok: bool
    status: int | None = None  # last HTTP status or SMTP reply code
    attempts: int = 0
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Signatures


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 under `secret` of `b"<timestamp>." + body`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The value of X-Cityward-Signature: `t=<timestamp>,v1=<hex>`."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={sign(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, now: float | None = None, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """True when `header` (an X-Cityward-Signature value) signs `body` under `secret` and its timestamp
    is within `tolerance` seconds of `now` (default: the current time). Several `v1=` entries are
    accepted (any may match); unknown entries are ignored; anything malformed is False."""
    if not secret:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                return False
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates or len(candidates) > _MAX_SIGNATURES:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:
        if _HEX_SHA256.fullmatch(candidate):
            matched |= hmac.compare_digest(expected, candidate.encode())
    return matched


def canonical_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# ---------------------------------------------------------------------------------------------
# Webhooks


class _Refused(Exception):
    """A delivery that must not be attempted (or re-attempted): bad URL, private address, bad header."""


class _Transient(Exception):
    """A failure worth a retry: DNS, connection, timeout."""


def _token_error(n: Notification) -> str | None:
    for what, value in (("kind", n.kind), ("idempotency key", n.idempotency_key)):
        if not _TOKEN.fullmatch(value):
            return f"{what} must be 1 to 200 printable ASCII characters without spaces"
    return None


def display_url(raw: str) -> str:
    try:
        url = httpx.URL(raw)
        return str(url.copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _Refused(f"invalid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise _Refused(f"URL scheme {url.scheme or '(none)'!r} refused: only http and https")
    if not url.raw_host:
        raise _Refused("URL without a host")
    if url.userinfo:
        raise _Refused("credentials in the URL are refused")
    return url


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not _is_public(embedded):
            return False
    return address.is_global and not address.is_multicast


async def _resolve(host: str, port: int, allow_private: bool) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror and friends: possibly transient
        raise _Transient(f"cannot resolve {host}: {exc}") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _Transient(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            if not _is_public(ipaddress.ip_address(address.split("%", 1)[0])):
                raise _Refused(f"{host} resolves to a non-public address ({address}); private targets not allowed")
    return addresses


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:_EXCERPT] if text else type(exc).__name__


def _excerpt(body: bytes) -> str:
    text = body[:_EXCERPT].decode("utf-8", errors="replace")
    return _CONTROL.sub(" ", text).strip()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    return None


@functools.cache
def _system_trust() -> ssl.SSLContext:
    """Loading the system CA store takes tens of milliseconds: once per process."""
    return ssl.create_default_context()


class _Clients:
    """One client per origin as the caller wrote it. Requests go to a pinned address, and httpx pools
    connections by that address: with a single client, a TLS connection verified for one host name
    could carry a request for another host name served from the same address."""

    def __init__(self, timeout: float, concurrency: int, ssl_context: ssl.SSLContext) -> None:
        self._timeout = timeout
        self._concurrency = concurrency
        self._ssl_context = ssl_context
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}

    def get(self, url: httpx.URL) -> httpx.AsyncClient:
        key = (url.scheme, url.raw_host.decode("ascii"), url.port)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout), follow_redirects=False, trust_env=False,
                verify=self._ssl_context, headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=self._concurrency,
                                    max_keepalive_connections=min(self._concurrency, 5)),
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def _post_once(
    client: httpx.AsyncClient, url: httpx.URL, allow_private: bool, body: bytes, headers: dict[str, str],
) -> tuple[int, bytes, float | None]:
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await _resolve(host, port, allow_private)
    extensions: dict[str, Any] = {}
    if url.scheme == "https" and _ip_literal(host) is None:
        extensions["sni_hostname"] = host  # certificate checked against the name, not the pinned address
    headers = {**headers, "Host": url.netloc.decode("ascii")}
    last: Exception | None = None
    for address in addresses:  # the next address only when no connection could be made: nothing was sent
        try:
            request = client.build_request("POST", url.copy_with(host=address), content=body, headers=headers,
                                           extensions=extensions)
        except (httpx.InvalidURL, ValueError) as exc:  # e.g. an IPv6 address with a zone
            last = exc
            continue
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            last = exc
            continue
        except httpx.TransportError as exc:
            raise _Transient(_describe(exc)) from None
        try:
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk[: MAX_RESPONSE_BYTES - len(received)]
                if len(received) >= MAX_RESPONSE_BYTES:
                    break
        except httpx.TransportError:
            pass  # the status is what counts; a broken body after it does not change the outcome
        finally:
            await response.aclose()
        return response.status_code, bytes(received), _retry_after(response)
    raise _Transient(_describe(last) if last is not None else "no address to connect to")


async def _deliver_webhook(
    notification: Notification, target: WebhookTarget, clients: _Clients, *,
    timeout: float, retries: int, backoff: float, allow_private: bool,
) -> Delivery:
    key = notification.idempotency_key
    display = display_url(target.url)

    def result(ok: bool, status: int | None, attempts: int, error: str | None) -> Delivery:
        if ok:
            log.info("webhook %s (%s) delivered to %s: HTTP %s after %d attempt(s)",
                     key, notification.kind, display, status, attempts)
        else:
            log.warning("webhook %s (%s) to %s failed after %d attempt(s): %s",
                        key, notification.kind, display, attempts, error)
        return Delivery(key, "webhook", display, ok, status, attempts, error)

    try:
        url = _parse_url(target.url)
        token_error = _token_error(notification)
        if token_error:
            raise _Refused(token_error)
        try:
            body = canonical_json(notification.payload)
        except (TypeError, ValueError) as exc:
            raise _Refused(f"payload is not JSON-serializable: {exc}") from None
    except _Refused as exc:
        return result(False, None, 0, str(exc))

    client = clients.get(url)
    attempts = 0
    status: int | None = None
    error: str | None = None
    for attempt in range(retries + 1):
        retry_after: float | None = None
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",  # the 64 KB cap is on the bytes received, not a decompressed bomb
            EVENT_HEADER: notification.kind,
            DELIVERY_HEADER: key,
            SIGNATURE_HEADER: signature_header(target.secret, timestamp, body),
        }
        try:
            async with asyncio.timeout(timeout):
                status, received, retry_after = await _post_once(client, url, allow_private, body, headers)
        except _Refused as exc:
            return result(False, status, attempts, str(exc))
        except _Transient as exc:
            attempts += 1
            status, error, retryable = None, str(exc), True
        except TimeoutError:
            attempts += 1
            status, error, retryable = None, f"timed out after {timeout:g} s", True
        else:
            attempts += 1
            if 200 <= status < 300:
                return result(True, status, attempts, None)
            if 300 <= status < 400:
                error, retryable = f"HTTP {status}: redirect not followed", False
            else:
                detail = _excerpt(received)
                error = f"HTTP {status}" + (f": {detail}" if detail else "")
                retryable = status >= 500 or status in (408, 429)
        if not retryable or attempt == retries:
            break
        delay = backoff * (2 ** attempt) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not crypto)
        await asyncio.sleep(max(delay, retry_after or 0.0))
    return result(False, status, attempts, error)


async def deliver_webhooks(
    items: list[tuple[Notification, WebhookTarget]], *,
    timeout: float = 10.0, concurrency: int = 20, retries: int = 2, backoff: float = 0.5,
    allow_private: bool = False, ssl_context: ssl.SSLContext | None = None,
) -> list[Delivery]:
    """POST each notification's payload to its target, signed; one `Delivery` per item, in order.

    2xx is delivered. 5xx, 408, 429 (honoring a numeric Retry-After up to 30 s), timeouts, DNS and
    connection errors are retried `retries` times with exponential back-off from `backoff` seconds
    (jittered). Other 4xx and 3xx fail at once. `timeout` bounds each attempt as a whole.
    `ssl_context` replaces the system trust store (a private CA)."""
    if concurrency < 1 or retries < 0 or timeout <= 0:
        raise ValueError("concurrency >= 1, retries >= 0 and timeout > 0 are required")
    if not items:
        return []
    clients = _Clients(timeout, concurrency, ssl_context or _system_trust())
    gate = asyncio.Semaphore(concurrency)

    async def one(notification: Notification, target: WebhookTarget) -> Delivery:
        async with gate:
            try:
                return await _deliver_webhook(notification, target, clients, timeout=timeout, retries=retries,
                                              backoff=backoff, allow_private=allow_private)
            except Exception as exc:  # a bug here must not lose the other deliveries of the batch
                log.exception("webhook %s: unexpected error", notification.idempotency_key)
                return Delivery(notification.idempotency_key, "webhook", display_url(target.url), False, None, 0,
                                f"internal error: {type(exc).__name__}")

    try:
        return list(await asyncio.gather(*(one(n, t) for n, t in items)))
    finally:
        await clients.aclose()


# ---------------------------------------------------------------------------------------------
# E-mail


def address_error(address: str, what: str) -> str | None:
    if _CONTROL.search(address) or "\t" in address:
        return f"{what} contains CR, LF or other control characters"
    if not address.isascii():
        return f"{what} must be ASCII (an internationalized domain in its punycode form)"
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError) as exc:
        return f"{what} is not a valid address: {exc}"
    if not parsed.domain or parsed.addr_spec != address:
        return f"{what} is not a bare address (local@domain)"
    return None


def _message_id(idempotency_key: str, sender: str) -> str:
    left = idempotency_key if _DOT_ATOM.fullmatch(idempotency_key) else hashlib.sha256(
        idempotency_key.encode()).hexdigest()[:40]
    domain = sender.rpartition("@")[2] or "cityward.invalid"
    return f"<{left}@{domain}>"


def _build_message(notification: Notification, address: str, sender: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = address
    msg["Subject"] = notification.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = _message_id(notification.idempotency_key, sender)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a notifier
    msg[EVENT_HEADER] = notification.kind
    msg[DELIVERY_HEADER] = notification.idempotency_key
    msg.set_content(notification.text)
    return msg.as_bytes(policy=email_policy.SMTP)


def _smtp_error(exc: BaseException) -> tuple[int | None, str]:
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, f"{type(exc).__name__}: {_reply(exc.smtp_code, exc.smtp_error)}"[:_EXCERPT]
    return None, _describe(exc)


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.username is not None and not settings.starttls:
        raise smtplib.SMTPException("refusing to send SMTP credentials without STARTTLS")
    conn = smtplib.SMTP(settings.host, settings.port, local_hostname=settings.local_hostname,
                        timeout=settings.timeout)
    try:
        conn.ehlo_or_helo_if_needed()
        if settings.starttls:  # SMTPNotSupportedError when not offered: no silent downgrade
            conn.starttls(context=settings.ssl_context or ssl.create_default_context())
            conn.ehlo_or_helo_if_needed()
        if settings.username is not None:
            conn.login(settings.username, settings.password or "")
    except BaseException:
        conn.close()
        raise
    return conn


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {_CONTROL.sub(' ', text)}"[:_EXCERPT]


def _rset(conn: smtplib.SMTP) -> None:
    """Abort the transaction; a connection that cannot is closed, and the next message reconnects."""
    try:
        conn.rset()
    except (OSError, smtplib.SMTPException):
        conn.close()


def _transaction(conn: smtplib.SMTP, sender: str, address: str, data: bytes) -> tuple[bool, int, str]:
    code, message = conn.mail(sender)
    if code != 250:
        _rset(conn)
        return False, code, f"sender refused: {_reply(code, message)}"
    code, message = conn.rcpt(address)
    if code not in (250, 251):
        _rset(conn)
        return False, code, f"recipient refused: {_reply(code, message)}"
    try:
        code, message = conn.data(data)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
        _rset(conn)
        return False, exc.smtp_code, f"data refused: {_reply(exc.smtp_code, exc.smtp_error)}"
    if code != 250:
        return False, code, f"message refused: {_reply(code, message)}"
    return True, code, _reply(code, message)


def send_emails(items: list[tuple[Notification, EmailTarget]], smtp: SmtpSettings) -> list[Delivery]:
    """Send each notification as a plain-text e-mail over one SMTP connection; one `Delivery` per
    item, in order, never raising for a failed one. A message refused by the server fails alone; when
    the connection breaks, the next message reconnects once, and if that fails the rest fail with it.
    A message whose transaction broke is not re-sent (it may have been accepted)."""
    results: list[Delivery | None] = [None] * len(items)
    pending: list[tuple[int, bytes]] = []
    sender_error = address_error(smtp.sender, "sender")
    for index, (notification, target) in enumerate(items):
        error = sender_error or address_error(target.address, "recipient") or _token_error(notification)
        if not error and _CONTROL.search(notification.subject):
            error = "subject contains CR, LF or other control characters"
        data = b""
        if not error:
            try:
                data = _build_message(notification, target.address, smtp.sender)
            except (ValueError, TypeError, UnicodeError) as exc:
                error = f"message not built: {_describe(exc)}"
        if error:
            results[index] = Delivery(notification.idempotency_key, "email", target.address, False, None, 0, error)
        else:
            pending.append((index, data))

    conn: smtplib.SMTP | None = None
    connect_error: tuple[int | None, str] | None = None
    try:
        for index, data in pending:
            notification, target = items[index]
            key, address = notification.idempotency_key, target.address
            if conn is not None and conn.sock is None:  # closed after a failed transaction
                conn = None
            if conn is None and connect_error is None:
                try:
                    conn = _connect(smtp)
                except (OSError, smtplib.SMTPException) as exc:
                    code, text = _smtp_error(exc)
                    connect_error = (code, f"cannot connect to {smtp.host}:{smtp.port}: {text}")
            if conn is None:
                assert connect_error is not None
                results[index] = Delivery(key, "email", address, False, connect_error[0], 1, connect_error[1])
                continue
            try:
                ok, code, text = _transaction(conn, smtp.sender, address, data)
            except (OSError, smtplib.SMTPException) as exc:
                code_or_none, text = _smtp_error(exc)
                results[index] = Delivery(key, "email", address, False, code_or_none, 1, text)
                conn.close()
                conn = None
                continue
            results[index] = Delivery(key, "email", address, ok, code, 1, None if ok else text)
    finally:
        if conn is not None:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()

    done: list[Delivery] = []
    for delivery, (notification, _) in zip(results, items, strict=True):
        assert delivery is not None
        if delivery.ok:
            log.info("e-mail %s (%s) accepted for %s: %s", delivery.idempotency_key, notification.kind,
                     delivery.target, delivery.status)
        else:
            log.warning("e-mail %s (%s) to %s failed: %s", delivery.idempotency_key, notification.kind,
                        delivery.target, delivery.error)
        done.append(delivery)
    return done


async def send_emails_async(items: list[tuple[Notification, EmailTarget]], smtp: SmtpSettings) -> list[Delivery]:
    """`send_emails` in a worker thread, for callers on an event loop."""
    return await asyncio.to_thread(send_emails, items, smtp)
