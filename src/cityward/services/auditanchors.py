"""Audit-log anchors: signed checkpoints of the chain's head, outside the database, sent to partners.

`anchor` verifies the whole chain (and against the previous anchor), signs its head with the city's
anchor key (derived from CITYWARD_SECRET_KEY, adapters/secretbox.py), appends the anchor to the
anchors file, records `auditlog.anchored` and sends the anchor to the organizations configured to
receive it (their webhook and/or e-mail, as vulnerability notifications travel). `verify` walks the
chain and checks it against the best anchor of a file: the city's own, or a partner's copy.

What an anchor proves is bounded by where copies live: a cut tail or a rewrite of events up to the
last anchor is detected; events after it are as safe as the chain alone makes them. Whoever holds
both the database and the anchors file can remove them together; the `auditlog.anchored` events in
the log and the partners' copies are the witnesses then.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityward.adapters import anchor_files, notify
from cityward.adapters.secretbox import SecretBox, anchor_signing_key
from cityward.adapters.storage.models import AuditEventRow, OrganizationRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain import auditanchors as anchors
from cityward.domain.access import require_city_admin
from cityward.domain.auditchain import ChainReport
from cityward.domain.names import name_key
from cityward.domain.organizations import Caller
from cityward.errors import Conflict, InvalidInput, PreconditionFailed
from cityward.services.auditlog import record_verification, walk
from cityward.services.notifications import Sent, deliver
from cityward.services.organizations import city_org

ANCHORED = "auditlog.anchored"
KIND = "audit.anchor"  # the notification's kind (X-Cityward-Event)

Status = Literal["ok", "none", "failed", "unchecked"]


@dataclass(frozen=True)
class AnchorCheck:
    """The chain as seen from the best (highest) anchor of a file.

    ok: the anchored event is there with its hash and the chain from it to the head holds.
    none: no anchor to check against (yet). failed: `reason` says what. unchecked: the chain itself
    is broken, which the chain report names."""

    status: Status
    source: str
    anchor: anchors.Anchor | None = None
    line: int | None = None
    reason: str | None = None
    anchors: int = 0  # anchors read from the file

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_dict(self) -> dict[str, object]:
        a = self.anchor
        return {"status": self.status, "source": self.source, "anchors": self.anchors, "line": self.line,
                "seq": a.seq if a else None, "head": a.head if a else None,
                "at": a.fields()["at"] if a else None, "key": a.key if a else None, "reason": self.reason}


@dataclass(frozen=True)
class Anchored:
    anchor: anchors.Anchor
    file: Path
    head_after: int  # the chain's head once the anchoring and its deliveries were recorded
    sent: list[Sent] = field(default_factory=list)


def signing_key(master_key: bytes) -> Ed25519PrivateKey:
    """The city's anchor key: derived from the secret key, never stored (adapters/secretbox.py)."""
    return anchor_signing_key(master_key)


def read_file(path: Path, public: Ed25519PublicKey, *, required: bool) -> AnchorCheck:
    """The best anchor of `path` whose signature holds, or why there is none. A line that is not an
    anchor is bad input (exit 2, naming the line); an anchor that does not verify fails the check:
    it is the trace of a forgery, and no later anchor is trusted over it."""
    source = str(path)
    if not path.exists():
        if required:
            raise InvalidInput(f"anchors file {path} does not exist")
        return AnchorCheck("none", source, reason=f"no anchors file at {path} yet: run `cityward auditlog anchor`")
    if path.is_dir():
        raise InvalidInput(f"anchors file {path} is a directory")
    own = anchors.key_id(public)
    best: tuple[int, anchors.Anchor] | None = None
    count = 0
    for number, text in anchor_files.lines(path, anchors.MAX_LINE):
        try:
            anchor = anchors.parse_line(text)
        except ValueError as exc:
            raise InvalidInput(f"{path}, line {number}: {exc}", hint="an anchors file holds one JSON anchor "
                               "per line, as `cityward auditlog anchor` writes them") from None
        count += 1
        if anchor.key != own:
            return AnchorCheck("failed", source, anchor, number, anchors=count, reason=(
                f"line {number}: the anchor is signed by key {anchor.key}, not this city's anchor key {own}: "
                "forged, or made by another installation (or under another CITYWARD_SECRET_KEY)"))
        if not anchors.signature_ok(public, anchor):
            return AnchorCheck("failed", source, anchor, number, anchors=count, reason=(
                f"line {number}: the anchor's signature does not verify with this city's anchor key {own}: "
                "the anchor was forged or altered"))
        if best is None or anchor.seq >= best[1].seq:
            best = (number, anchor)
    if best is None:
        return AnchorCheck("none", source, reason=f"{path} holds no anchor yet: run `cityward auditlog anchor`")
    return AnchorCheck("ok", source, best[1], best[0], anchors=count)


def _hash_at(session: Session, seq: int) -> str | None:
    return session.scalar(select(AuditEventRow.hash).where(AuditEventRow.seq == seq))


def _recorded_anchor(session: Session) -> tuple[int, str, str] | None:
    """The latest anchoring the log itself records: (anchored seq, when, file)."""
    row = session.scalar(select(AuditEventRow).where(AuditEventRow.action == ANCHORED)
                         .order_by(AuditEventRow.seq.desc()).limit(1))
    if row is None or not isinstance(row.after, dict) or not isinstance(row.after.get("seq"), int):
        return None
    return row.after["seq"], f"{row.at:%Y-%m-%d %H:%M:%S}", str(row.after.get("file", "?"))


def verify(uow_factory: UnitOfWorkFactory, caller: Caller, public: Ed25519PublicKey, path: Path, *,
           own: bool = True) -> tuple[ChainReport, AnchorCheck]:
    """Walk the chain and check it against the best anchor of `path`.

    `own`: the installation's anchors file (missing is "none yet"; an anchoring recorded in the log
    that the file lacks fails). Otherwise a partner's copy (it must exist; it may lag behind)."""
    require_city_admin(caller, "verify the audit log")
    found = read_file(path, public, required=not own)
    with uow_factory() as uow:
        report = walk(uow.session)
        if not report.ok:
            return report, AnchorCheck("unchecked", found.source, found.anchor, found.line, anchors=found.anchors,
                                       reason="the chain itself is broken" if found.ok else found.reason)
        if found.status == "failed":
            return report, found
        recorded = _recorded_anchor(uow.session) if own else None
        if recorded is not None and (found.anchor is None or found.anchor.seq < recorded[0]):
            seq, when, file = recorded
            return report, AnchorCheck("failed", found.source, found.anchor, found.line, anchors=found.anchors, reason=(
                f"the log records an anchor of event {seq} made {when} UTC (written to {file}) that {path} does "
                "not hold: the anchors file was replaced or cut short (or CITYWARD_AUDIT_ANCHOR_FILE points "
                "elsewhere)"))
        if found.anchor is None:
            return report, found
        problem = anchors.against_chain(found.anchor, report, _hash_at(uow.session, found.anchor.seq))
    if problem:
        return report, AnchorCheck("failed", found.source, found.anchor, found.line, problem, found.anchors)
    return report, found


def verify_and_record(uow_factory: UnitOfWorkFactory, caller: Caller, public: Ed25519PublicKey,
                      path: Path) -> tuple[ChainReport, AnchorCheck]:
    """`verify`, with its result appended to the log (the dashboard shows the last one)."""
    report, check = verify(uow_factory, caller, public, path)
    record_verification(uow_factory, caller, report, anchor=check.as_dict())
    return report, check


def _recipients(session: Session, names: list[str]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for name in names:
        row = session.scalar(select(OrganizationRow).where(OrganizationRow.name_key == name_key(name)))
        if row is None:
            raise InvalidInput(f"CITYWARD_AUDIT_ANCHOR_RECIPIENTS names {name!r}, which is not an organization",
                               hint="cityward orgs list")
        if (row.id, row.name) not in found:
            found.append((row.id, row.name))
    return found


def _notification(org: str, anchor: anchors.Anchor) -> notify.Notification:
    line = anchor.line()
    subject = f"cityward: audit log anchor of {anchor.city}, event {anchor.seq}"
    text = "\n".join([
        f"{anchor.city} anchored its audit log at event {anchor.seq} ({anchor.fields()['at']}).",
        "",
        "Keep this line (append it to your copy of the anchors file); with it the city's audit log",
        "can be checked for a cut tail or a rewrite: cityward auditlog verify --anchors YOUR-COPY",
        "",
        line,
        "",
        f"Signed with the city's anchor key {anchor.key} (Ed25519; the public key: cityward auditlog anchor-key).",
    ])
    key = hashlib.sha256(json.dumps([KIND, org, anchor.sig]).encode()).hexdigest()[:40]
    return notify.Notification(kind=KIND, recipient_org=org, subject=subject, text=text,
                               payload={"kind": KIND, "organization": org, "anchor": anchor.fields()},
                               idempotency_key=key)


def anchor(uow_factory: UnitOfWorkFactory, caller: Caller, key: Ed25519PrivateKey, path: Path, *,
           recipients: list[str], box: SecretBox, smtp: notify.SmtpSettings | None = None,
           allow_private: bool = False, now: datetime | None = None) -> Anchored:
    """Verify the chain, then anchor its head: signed, appended to `path`, recorded, and delivered
    to `recipients` (organization names). A broken chain, or one that fails its last anchor, is
    refused: anchoring it would vouch for the damage."""
    require_city_admin(caller, "anchor the audit log")
    with uow_factory() as uow:
        targets = _recipients(uow.session, recipients)
        city = city_org(uow.session).name
    report, check = verify(uow_factory, caller, key.public_key(), path)
    if not report.ok:
        raise Conflict(f"the audit log is broken at event {report.first_broken}: {report.reason}; not anchored",
                       hint="cityward auditlog verify")
    if not check.ok:
        raise Conflict(f"the audit log fails its last anchor ({check.reason}); not anchored",
                       hint="cityward auditlog verify")
    if report.events < 1:
        raise PreconditionFailed("the audit log is empty: nothing to anchor", hint="cityward init")
    made = anchors.sign_head(key, city, report, now or uow_factory.clock())
    anchor_files.append(path, made.line())
    with uow_factory(write=True) as uow:
        uow.record(caller, ANCHORED, "audit_log", "chain", after={
            "seq": made.seq, "head": made.head, "key": made.key, "file": str(path),
            "recipients": [name for _id, name in targets]})
        uow.commit()
    sent = deliver(uow_factory, caller, box, smtp, [(org_id, _notification(name, made)) for org_id, name in targets],
                   allow_private=allow_private) if targets else []
    return Anchored(made, path, head_seq(uow_factory), sent)


def head_seq(uow_factory: UnitOfWorkFactory) -> int:
    """The sequence number of the newest event (0: an empty log)."""
    with uow_factory() as uow:
        return uow.session.scalar(select(AuditEventRow.seq).order_by(AuditEventRow.seq.desc()).limit(1)) or 0


_BOOKKEEPING = {ANCHORED, "auditlog.verified"}


def head_moved(uow_factory: UnitOfWorkFactory, public: Ed25519PublicKey, path: Path) -> bool:
    """Whether something happened since the best anchor of `path`: anchoring itself (its record and
    its deliveries) and verifications do not count, so an idle city is not anchored day after day."""
    found = read_file(path, public, required=False)
    since = found.anchor.seq if found.anchor is not None else 0
    with uow_factory() as uow:
        rows = uow.session.execute(select(AuditEventRow.action, AuditEventRow.after)
                                   .where(AuditEventRow.seq > since).order_by(AuditEventRow.seq).limit(1000)).all()
    for action, after in rows:
        delivery = action.startswith("notification.") and isinstance(after, dict) and after.get("kind") == KIND
        if action not in _BOOKKEEPING and not delivery:
            return True
    return False
