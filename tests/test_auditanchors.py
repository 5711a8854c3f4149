"""Audit-log anchors: a cut tail or a rewrite with recomputed hashes, invisible to the chain alone,
is caught by the city's signed checkpoint kept outside the database; a forged checkpoint is refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from cityward.adapters import anchor_files, notify
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import AuditEventRow, NotificationRow
from cityward.bootstrap import Platform
from cityward.domain import auditanchors as anchors
from cityward.domain.auditchain import ChainReport, event_hash
from cityward.domain.organizations import Caller
from cityward.errors import Conflict, InvalidInput
from cityward.services import auditanchors, auditlog, notifications, organizations, zones
from tests.test_cli import Cli


@pytest.fixture
def logged(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "downtown")
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    zones.assign_duty(platform.uow, city, "downtown", "maintain", "Alpha")
    return city


@pytest.fixture
def key(platform: Platform) -> Ed25519PrivateKey:
    return auditanchors.signing_key(platform.settings.secret_key_bytes())


@pytest.fixture
def anchors_file(tmp_path: Path) -> Path:
    return tmp_path / "anchors" / "cityward-anchors.jsonl"


def _anchor(platform: Platform, caller: Caller, key: Ed25519PrivateKey, path: Path,
            recipients: list[str] | None = None) -> auditanchors.Anchored:
    return auditanchors.anchor(platform.uow, caller, key, path, recipients=recipients or [],
                               box=SecretBox(platform.settings.secret_key_bytes()), allow_private=True)


def _check(platform: Platform, caller: Caller, key: Ed25519PrivateKey, path: Path,
           own: bool = True) -> tuple[ChainReport, auditanchors.AnchorCheck]:
    return auditanchors.verify(platform.uow, caller, key.public_key(), path, own=own)


def _more_events(platform: Platform, caller: Caller, n: int = 2) -> None:
    for i in range(n):
        zones.create_zone(platform.uow, caller, f"zone {i} {datetime.now(UTC).timestamp()}")


def _rewrite(platform: Platform, seq: int) -> None:
    """What someone with write access to the database can do: change an event and recompute every
    later hash, so that the chain alone verifies again."""
    with platform.uow(write=True) as uow:
        rows = list(uow.session.scalars(select(AuditEventRow).where(AuditEventRow.seq >= seq)
                                        .order_by(AuditEventRow.seq)))
        prev = uow.session.scalar(select(AuditEventRow.hash).where(AuditEventRow.seq == seq - 1))
        assert prev is not None
        for row in rows:
            if row.seq == seq:
                row.actor = "someone else"
            row.prev_hash = prev
            row.hash = prev = event_hash(prev, row.seq, row.at, row.actor, row.org_id, row.action, row.target_type,
                                         row.target_id, row.before, row.after)
            uow.session.flush()
        uow.commit()


def _cut(platform: Platform, from_seq: int) -> None:
    with platform.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": from_seq})


def test_a_clean_log_verifies_against_its_latest_anchor(platform: Platform, logged: Caller,
                                                        key: Ed25519PrivateKey, anchors_file: Path) -> None:
    report, check = _check(platform, logged, key, anchors_file)
    assert report.ok and check.status == "none" and check.ok and "auditlog anchor" in (check.reason or "")
    first = _anchor(platform, logged, key, anchors_file)
    _more_events(platform, logged)
    second = _anchor(platform, logged, key, anchors_file)
    _more_events(platform, logged)
    assert second.anchor.seq > first.anchor.seq and first.anchor.seq == 5
    report, check = _check(platform, logged, key, anchors_file)
    assert report.ok and check.status == "ok" and check.anchor == second.anchor and check.line == 2
    assert check.anchors == 2
    lines = anchors_file.read_text().splitlines()
    assert [anchors.parse_line(line) for line in lines] == [first.anchor, second.anchor]
    recorded = auditlog.list_events(platform.uow, logged, action=auditanchors.ANCHORED)
    assert [e.after["seq"] for e in recorded] == [second.anchor.seq, first.anchor.seq]
    assert first.anchor.city == "Springfield" and anchors.signature_ok(key.public_key(), first.anchor)


@pytest.mark.parametrize("cut_from", ["anchored", "before_anchored"])
def test_a_cut_tail_is_detected(platform: Platform, logged: Caller, key: Ed25519PrivateKey, anchors_file: Path,
                                cut_from: str) -> None:
    made = _anchor(platform, logged, key, anchors_file).anchor
    _more_events(platform, logged)
    _cut(platform, made.seq if cut_from == "anchored" else made.seq - 2)
    assert auditlog.verify_auditlog(platform.uow, logged).ok  # what is left still chains…
    report, check = _check(platform, logged, key, anchors_file)
    assert report.ok and check.status == "failed" and not check.ok  # …but not up to the anchor
    assert "cut off the tail" in (check.reason or "")


def test_a_cut_tail_refilled_with_new_events_is_detected(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                                         anchors_file: Path) -> None:
    made = _anchor(platform, logged, key, anchors_file).anchor
    _cut(platform, made.seq - 1)
    _more_events(platform, logged, 4)  # the log is as long as before, with other events
    report, check = _check(platform, logged, key, anchors_file)
    assert report.ok and report.events > made.seq
    assert check.status == "failed" and "no longer has the hash anchored" in (check.reason or "")


def test_a_rewrite_with_recomputed_hashes_is_detected(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                                      anchors_file: Path) -> None:
    made = _anchor(platform, logged, key, anchors_file).anchor
    _more_events(platform, logged)
    _rewrite(platform, 3)
    assert auditlog.verify_auditlog(platform.uow, logged).ok  # the chain alone cannot tell
    report, check = _check(platform, logged, key, anchors_file)
    assert report.ok and check.status == "failed"
    assert f"event {made.seq} no longer has the hash anchored" in (check.reason or "")
    with pytest.raises(Conflict, match="fails its last anchor"):  # and it is not anchored over
        _anchor(platform, logged, key, anchors_file)


def test_a_rewrite_after_the_last_anchor_is_beyond_it(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                                      anchors_file: Path) -> None:
    """The documented bound: events after the last anchor are only as safe as the chain makes them."""
    made = _anchor(platform, logged, key, anchors_file).anchor
    _more_events(platform, logged, 3)
    _rewrite(platform, made.seq + 2)
    assert _check(platform, logged, key, anchors_file)[1].status == "ok"


def test_forged_anchors_are_refused(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                    anchors_file: Path) -> None:
    made = _anchor(platform, logged, key, anchors_file).anchor
    _more_events(platform, logged)
    _rewrite(platform, 2)
    # The forger appends an anchor of the rewritten head, with the city's key id but no city key…
    report = auditlog.verify_auditlog(platform.uow, logged)
    forged = {**made.fields(), "seq": report.events, "events": report.events, "head": report.head}
    with anchors_file.open("a") as fh:
        fh.write(json.dumps(forged) + "\n")
    check = _check(platform, logged, key, anchors_file)[1]
    assert check.status == "failed" and check.line == 2 and "signature does not verify" in (check.reason or "")
    # …or signs it with a key of their own.
    lines = anchors_file.read_text().splitlines()
    own = anchors.sign_head(Ed25519PrivateKey.generate(), "Springfield", report, datetime.now(UTC))
    anchors_file.write_text(lines[0] + "\n" + own.line() + "\n")
    check = _check(platform, logged, key, anchors_file)[1]
    assert check.status == "failed" and "not this city's anchor key" in (check.reason or "")
    # A valid signature over different bytes is no better: a signature copied onto another head.
    stolen = {**forged, "sig": made.sig}
    anchors_file.write_text(lines[0] + "\n" + json.dumps(stolen) + "\n")
    assert "signature does not verify" in (_check(platform, logged, key, anchors_file)[1].reason or "")


def test_a_missing_or_cut_anchors_file_is_noticed(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                                  anchors_file: Path) -> None:
    _anchor(platform, logged, key, anchors_file)
    second = _anchor(platform, logged, key, anchors_file)
    anchors_file.write_text(anchors_file.read_text().splitlines()[0] + "\n")  # the newest anchor removed
    check = _check(platform, logged, key, anchors_file)[1]
    assert check.status == "failed" and f"records an anchor of event {second.anchor.seq}" in (check.reason or "")
    anchors_file.unlink()
    assert _check(platform, logged, key, anchors_file)[1].status == "failed"
    # A partner's copy may lag behind: it is checked for what it holds.
    partner = anchors_file.parent / "partner.jsonl"
    partner.write_text(second.anchor.line() + "\n")
    assert _check(platform, logged, key, partner, own=False)[1].status == "ok"


def test_anchoring_a_broken_chain_is_refused(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                             anchors_file: Path) -> None:
    with platform.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'x' WHERE seq = 2"))
    with pytest.raises(Conflict, match="broken at event 2"):
        _anchor(platform, logged, key, anchors_file)
    assert not anchors_file.exists()


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json\n", "line 1: not a JSON object"),
    ('{"v": 1}\n', "line 1: field 'city' is missing"),
    ("\n\n" + "x" * 5000 + "\n", "line 3: longer than 4096"),
])
def test_a_bad_anchors_file_is_bad_input_naming_the_line(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                                         anchors_file: Path, content: str, expected: str) -> None:
    anchors_file.parent.mkdir(parents=True)
    anchors_file.write_text(content)
    with pytest.raises(InvalidInput, match=expected):
        _check(platform, logged, key, anchors_file, own=False)
    with pytest.raises(InvalidInput, match="does not exist"):
        _check(platform, logged, key, anchors_file.parent / "nope.jsonl", own=False)


def test_a_half_written_line_is_named_and_the_next_anchor_starts_a_line(platform: Platform, logged: Caller,
                                                                        key: Ed25519PrivateKey,
                                                                        anchors_file: Path) -> None:
    first = _anchor(platform, logged, key, anchors_file)
    with anchors_file.open("a") as fh:
        fh.write(first.anchor.line()[:40])  # a crash mid-write
    with pytest.raises(InvalidInput, match="line 2: not a JSON object"):  # named, never taken for an anchor
        _check(platform, logged, key, anchors_file)
    anchor_files.append(anchors_file, first.anchor.line())
    assert anchors_file.read_text().splitlines()[2] == first.anchor.line()


class _Inbox(BaseHTTPRequestHandler):
    posts: list[tuple[dict[str, str], bytes]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.posts.append((dict(self.headers.items()), self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def inbox() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    posts: list[tuple[dict[str, str], bytes]] = []
    handler = type("Inbox", (_Inbox,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/anchors", posts
    finally:
        server.shutdown()
        server.server_close()


def test_anchors_are_sent_to_partners_that_want_them(platform: Platform, logged: Caller, key: Ed25519PrivateKey,
                                                     anchors_file: Path,
                                                     inbox: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, posts = inbox
    organizations.create_org(platform.uow, logged, "Beta", "integrator")
    box = SecretBox(platform.settings.secret_key_bytes())
    _contact, secret = notifications.set_contact(platform.uow, logged, box, "Alpha", webhook_url=url)
    notifications.set_contact(platform.uow, logged, box, "Beta", webhook_url=url + "/beta")
    with pytest.raises(InvalidInput, match="'Nobody', which is not an organization"):
        _anchor(platform, logged, key, anchors_file, recipients=["alpha", "Nobody"])
    assert not anchors_file.exists() and not posts  # nothing done
    done = _anchor(platform, logged, key, anchors_file, recipients=["alpha"])  # names in any case
    assert [(s.organization, s.channel, s.ok) for s in done.sent] == [("Alpha", "webhook", True)]
    (headers, body), = posts  # Beta did not ask for anchors
    assert headers[notify.EVENT_HEADER] == auditanchors.KIND and secret
    assert notify.verify(secret, headers[notify.SIGNATURE_HEADER], body)
    received = json.loads(body)
    assert received["organization"] == "Alpha"
    # The partner keeps the anchor as a line of its own copy, and the city's log verifies against it.
    copy = anchors_file.parent / "alpha-copy.jsonl"
    copy.write_text(json.dumps(received["anchor"]) + "\n")
    assert anchors.parse_line(copy.read_text().strip()) == done.anchor
    assert _check(platform, logged, key, copy, own=False)[1].status == "ok"
    with platform.uow() as uow:
        kinds = list(uow.session.scalars(select(NotificationRow.kind)))
    assert kinds == [auditanchors.KIND]
    assert [e.action for e in auditlog.list_events(platform.uow, logged, limit=2)] == [
        "notification.delivered", auditanchors.ANCHORED]
    assert done.head_after == auditanchors.head_seq(platform.uow)


# --- the anchor line, as a parser of untrusted text ------------------------------------------


def _signed(seq: int, at: datetime) -> anchors.Anchor:
    return anchors.sign_head(Ed25519PrivateKey.from_private_bytes(bytes(32)), "Springfield",
                             ChainReport(seq, "ab" * 32), at)


@settings(max_examples=100, deadline=None)
@given(seq=st.integers(1, 2**63 - 1), at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1),
                                                    timezones=st.just(UTC)))
def test_an_anchor_line_round_trips(seq: int, at: datetime) -> None:
    made = _signed(seq, at)
    parsed = anchors.parse_line(made.line())
    assert parsed == made and anchors.signature_ok(Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key(),
                                                   parsed)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["v", "city", "seq", "head", "events", "at", "key", "sig", "x"]), inner, max_size=8), max_leaves=20
).map(json.dumps)))
def test_any_text_is_an_anchor_or_a_value_error(line: str) -> None:
    with contextlib.suppress(ValueError):  # anything else (TypeError, RecursionError…) fails the test
        anchors.parse_line(line)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 87), st.integers(0, 255))
def test_any_changed_byte_of_the_signature_fails(position: int, replacement: int) -> None:
    made = _signed(7, datetime(2026, 1, 1, tzinfo=UTC))
    raw = bytearray(base64.b64decode(made.sig))
    index = position % len(raw)
    if raw[index] == replacement:
        return
    raw[index] = replacement
    changed = anchors.Anchor(**{**made.__dict__, "sig": base64.b64encode(bytes(raw)).decode()})
    assert not anchors.signature_ok(Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key(), changed)


def test_deep_json_is_refused_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):  # deeper than the interpreter recurses
        anchors.parse_line("[" * 2000 + "]" * 2000)
    with pytest.raises(ValueError, match="longer than 4096"):
        anchors.parse_line("[" * 4000 + "]" * 4000)
    with pytest.raises(ValueError, match="time zone"):
        anchors.parse_line(_signed(1, datetime(2026, 1, 1, tzinfo=UTC)).line().replace("Z", ""))


# --- the CLI, in a subprocess --------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    run = Cli(tmp_path)
    run("init", "--city", "Springfield")
    return run


def _sql(cli: Cli, sql: str) -> None:
    with sqlite3.connect(cli.home / "cityward.db") as db:
        db.execute(sql)


def test_cli_anchor_then_verify_catches_a_cut_tail(cli: Cli) -> None:
    assert "auditlog anchor" in cli("auditlog", "verify").stdout  # no anchor yet: says how to make one
    made = json.loads(cli("auditlog", "anchor", "--json").stdout)["anchor"]
    assert (cli.home / "cityward-anchors.jsonl").read_text().strip() == json.dumps(made, sort_keys=True,
                                                                                  separators=(",", ":"))
    ok = json.loads(cli("auditlog", "verify", "--json").stdout)
    assert ok["ok"] and ok["anchor"]["status"] == "ok" and ok["anchor"]["seq"] == made["seq"]
    _sql(cli, f"DELETE FROM audit_events WHERE seq >= {made['seq']}")
    failed = cli("auditlog", "verify", code=1)
    assert "fails its anchor" in failed.stderr and "cut off the tail" in failed.stderr
    result = json.loads(cli("auditlog", "verify", "--json", code=1).stdout)
    assert not result["ok"] and result["anchor"]["status"] == "failed"


def test_cli_refuses_forged_anchors_and_anchoring_a_rewritten_log(cli: Cli, tmp_path: Path) -> None:
    cli.env["CITYWARD_AUDIT_ANCHOR_RECIPIENTS"] = '["Nobody"]'
    assert "'Nobody', which is not an organization" in cli("auditlog", "anchor", code=2).stderr
    assert not (cli.home / "cityward-anchors.jsonl").exists()
    del cli.env["CITYWARD_AUDIT_ANCHOR_RECIPIENTS"]
    made = json.loads(cli("auditlog", "anchor", "--json").stdout)["anchor"]
    copy = tmp_path / "partner.jsonl"  # a partner's copy, with the head changed
    copy.write_text(json.dumps({**made, "head": "0" * 64}) + "\n")
    assert "signature does not verify" in cli("auditlog", "verify", "--anchors", str(copy), code=1).stderr
    assert "does not exist" in cli("auditlog", "verify", "--anchors", str(tmp_path / "nope"), code=2).stderr
    pem = json.loads(cli("auditlog", "anchor-key", "--json").stdout)
    assert pem["key"] == made["key"] and "BEGIN PUBLIC KEY" in pem["public_key"]
    _sql(cli, "UPDATE audit_events SET actor = 'x' WHERE seq = 2")
    assert "broken at event 2" in cli("auditlog", "anchor", code=1).stderr
    assert len((cli.home / "cityward-anchors.jsonl").read_text().splitlines()) == 1


# --- `cityward serve` anchors by itself ----------------------------------------------------


def test_the_server_anchors_at_start_and_then_only_when_the_log_moved(platform: Platform, logged: Caller,
                                                                      key: Ed25519PrivateKey) -> None:
    from cityward.entrypoints.api.app import create_app
    from cityward.entrypoints.background import BackgroundAnchors

    path = platform.settings.audit_anchor_file
    app = create_app(platform, anchor_every_s=3600)

    async def serve_a_while() -> None:
        async with app.router.lifespan_context(app):  # start-up and shutdown, as uvicorn runs them
            deadline = time.monotonic() + 20
            while not path.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    asyncio.run(serve_a_while())
    assert _check(platform, logged, key, path)[1].status == "ok"
    assert auditlog.list_events(platform.uow, logged, limit=1)[0].actor == "system:audit-anchors"
    reports: list[str] = []
    anchoring = BackgroundAnchors(platform, 3600, report=reports.append)
    assert not anchoring.tick()  # nothing happened since but the anchoring itself
    auditanchors.verify_and_record(platform.uow, logged, key.public_key(), path)
    assert not anchoring.tick()  # nor does a verification count
    _more_events(platform, logged, 1)
    assert anchoring.tick() and len(path.read_text().splitlines()) == 2
    _rewrite(platform, 2)
    anchoring.every_s = 0.05
    anchoring.start()
    _more_events(platform, logged, 1)
    deadline = time.monotonic() + 20
    while not reports and time.monotonic() < deadline:
        time.sleep(0.05)
    anchoring.stop()
    assert reports and "not anchored" in reports[0] and "fails its last anchor" in reports[0]
