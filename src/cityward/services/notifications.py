"""Telling each organization what the matched vulnerabilities mean for it.

- Each **maintaining organization** (the `maintain` duty, per device or inherited from its zone)
  gets the CVEs affecting the devices it maintains, most urgent first: product, firmware, device
  count, due date and the fix.
- Each **manufacturer** organization gets the number of its deployed units affected, by model
  (its own, also when the units are sold under another brand), firmware and CVE.

Delivery (adapters/notify.py): a webhook signed with HMAC-SHA256 under the organization's own
secret, and/or e-mail over SMTP. A notification's idempotency key is a hash of what it says, so the
same news is delivered once per channel; news that changed is sent again. Every delivery is
stored and audited, never with a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import func, select

from cityward.adapters import notify
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.models import (
    DeviceRow,
    KevEntryRow,
    NotificationRow,
    OrganizationRow,
    OrgContactRow,
    ProductRow,
    VulnMatchRow,
)
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.names import name_key
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.products import product_key
from cityward.errors import InvalidInput, NotFound, PermissionDenied
from cityward.services import vulnerabilities

WEBHOOK_PURPOSE = "webhook-signing"
MAX_ITEMS = 500  # per notification: the rest is counted, and `cityward vulns list` has it all


@dataclass(frozen=True)
class Contact:
    organization: str
    webhook_url: str | None
    email: str | None
    has_secret: bool


def _org_key(org_id: int) -> str:
    return f"org:{org_id}"  # the sealing context of an organization's webhook secret


def set_contact(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, organization: str, *,
                webhook_url: str | None = None, email: str | None = None,
                rotate_secret: bool = False) -> tuple[Contact, str | None]:
    """Set where an organization is notified (city admins, or the organization's own admins).
    Returns the webhook signing secret when one is generated (new webhook, or rotated): it is shown
    once, for the receiver to verify signatures, and kept only sealed."""
    problem = notify.address_error(email, "e-mail address") if email else None
    if problem:
        raise InvalidInput(problem)
    if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
        raise InvalidInput(f"webhook {webhook_url!r} is not an http(s) URL")
    with uow_factory(write=True) as uow:
        s = uow.session
        org = s.scalar(select(OrganizationRow).where(OrganizationRow.name_key == name_key(organization)))
        if org is None:
            raise NotFound(f"organization {organization!r} not found")
        if not (caller.is_city_admin or (caller.org_id == org.id and caller.role is Role.ADMIN)):
            raise PermissionDenied(f"only a city administrator or an administrator of {organization} may set where "
                                   "it is notified")
        row = s.get(OrgContactRow, org.id)
        if row is None:
            row = OrgContactRow(org_id=org.id, updated_by=caller.actor, updated_at=uow.clock())
            s.add(row)
        fresh = None
        if webhook_url is not None:
            rotate_secret = rotate_secret or row.webhook_url is None
            row.webhook_url = webhook_url[:500]
        if email is not None:
            row.email = email
        if rotate_secret:
            if row.webhook_url is None:
                raise InvalidInput("no webhook to sign for: give --webhook first")
            fresh = secrets.token_urlsafe(32)
            row.webhook_secret = box.seal(_org_key(org.id), WEBHOOK_PURPOSE, fresh)
        row.updated_by, row.updated_at = caller.actor, uow.clock()
        uow.record(caller, "organization.contact_set", "organization", org.id, after={
            "webhook_url": notify.display_url(row.webhook_url) if row.webhook_url else None,
            "email": row.email, "secret_rotated": fresh is not None})
        uow.commit()
        return Contact(org.name, row.webhook_url, row.email, row.webhook_secret is not None), fresh


def _key(kind: str, org: str, items: list[dict[str, Any]]) -> str:
    """What the news says, not how it is ordered: ties in priority come back in any order."""
    said = sorted(json.dumps(i, sort_keys=True, default=str) for i in items)
    body = json.dumps([kind, org, said]).encode()
    return hashlib.sha256(body).hexdigest()[:40]


def _maintainer_news(uow_factory: UnitOfWorkFactory, caller: Caller) -> dict[str, list[dict[str, Any]]]:
    news: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in vulnerabilities.exposures(uow_factory, caller, limit=100_000):
        if e.organization is not None:
            news[e.organization].append({
                "cve": e.cve, "priority": e.label, "score": e.priority, "kev": e.kev, "due": e.due.isoformat(),
                "product": e.product, "firmware": e.firmware, "devices": e.devices,
                "fixed_version": e.fixed_version, "remediation": e.remediation, "advisory": e.advisory})
    return news


def _manufacturer_news(uow_factory: UnitOfWorkFactory) -> dict[str, list[dict[str, Any]]]:
    """Per manufacturer organization: its units affected, by (its) model, firmware and CVE."""
    news: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with uow_factory() as uow:
        s = uow.session
        makers = {product_key(brand or "", "")[0]: name for name, brand in s.execute(
            select(OrganizationRow.name, OrganizationRow.brand).where(
                OrganizationRow.kind == OrgKind.MANUFACTURER.value, OrganizationRow.brand.is_not(None)))}
        if not makers:
            return news
        rows = s.execute(
            select(ProductRow.origin_brand_key, ProductRow.origin_model, VulnMatchRow.firmware, VulnMatchRow.cve,
                   func.count(KevEntryRow.cve) > 0,
                   func.count(), func.count(func.distinct(ProductRow.brand)))
            .join(DeviceRow, vuln_frames.on_device())
            .join(ProductRow, ProductRow.id == DeviceRow.product_id)
            .outerjoin(KevEntryRow, KevEntryRow.cve == VulnMatchRow.cve)
            .where(ProductRow.origin_brand_key.in_(sorted(makers)))
            .group_by(ProductRow.origin_brand_key, ProductRow.origin_model, VulnMatchRow.firmware, VulnMatchRow.cve)
            .order_by(func.count().desc())).all()
    for brand_key, model, fw, cve, kev, units, labels in rows:
        news[makers[brand_key]].append({"model": model, "firmware": fw, "cve": cve, "kev": bool(kev),
                                        "units": units, "sold_under_brands": labels})
    return news


def _text(kind: str, org: str, items: list[dict[str, Any]]) -> tuple[str, str]:
    if kind == "vulnerability.exposure":
        urgent = sum(1 for i in items if i["priority"] == "critical")
        subject = f"cityward: {len(items)} vulnerability exposures on devices {org} maintains ({urgent} critical)"
        lines = [f"- {i['priority'].upper()} {i['cve']}{' (known exploited)' if i['kev'] else ''}: {i['devices']} "
                 f"x {i['product']} on {i['firmware']}, due {i['due']}; fix: {i['fixed_version'] or i['remediation']}"
                 for i in items[:50]]
        return subject, "\n".join([f"Devices maintained by {org}, most urgent first:", "", *lines, "",
                                   "All of it: cityward vulns list --org " + json.dumps(org)])
    units = sum(i["units"] for i in items)
    subject = f"cityward: {units} deployed {org} units affected by {len({i['cve'] for i in items})} vulnerabilities"
    lines = [f"- {i['units']} x {i['model']} on {i['firmware']}: {i['cve']}{' (known exploited)' if i['kev'] else ''}"
             + (f" (sold under {i['sold_under_brands']} brands)" if i["sold_under_brands"] > 1 else "")
             for i in items[:50]]
    return subject, "\n".join([f"Units of {org}'s products deployed in the city, affected:", "", *lines])


def compose(uow_factory: UnitOfWorkFactory, caller: Caller) -> list[tuple[int, notify.Notification]]:
    """Every organization's current news (organization id, notification)."""
    if not caller.is_city or caller.role is Role.VIEWER:
        raise PermissionDenied("only a city operator or administrator sends vulnerability notifications")
    with uow_factory() as uow:
        ids = dict(uow.session.execute(select(OrganizationRow.name, OrganizationRow.id)).all())
    out: list[tuple[int, notify.Notification]] = []
    for kind, news in (("vulnerability.exposure", _maintainer_news(uow_factory, caller)),
                       ("vulnerability.manufacturer_units", _manufacturer_news(uow_factory))):
        for org, items in sorted(news.items()):
            shown = items[:MAX_ITEMS]
            subject, text = _text(kind, org, shown)
            payload = {"kind": kind, "organization": org, "items": shown, "more": len(items) - len(shown)}
            out.append((ids[org], notify.Notification(kind=kind, recipient_org=org, subject=subject, text=text,
                                                      payload=payload, idempotency_key=_key(kind, org, items))))
    return out


def smtp_settings(url: str | None, sender: str | None) -> notify.SmtpSettings | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "smtp" or not parts.hostname:
        raise InvalidInput("CITYWARD_SMTP_URL must be smtp://[user:password@]host[:port][?starttls=off]")
    if not sender:
        raise InvalidInput("CITYWARD_SMTP_SENDER (the From address) is required with CITYWARD_SMTP_URL")
    starttls = parse_qs(parts.query).get("starttls", ["on"])[0] != "off"
    return notify.SmtpSettings(host=parts.hostname, port=parts.port or 587, sender=sender,
                               username=unquote(parts.username) if parts.username else None,
                               password=unquote(parts.password) if parts.password else None, starttls=starttls)


@dataclass(frozen=True)
class Sent:
    organization: str
    kind: str
    channel: str
    target: str
    ok: bool
    detail: str | None
    skipped: bool = False  # already delivered: not sent again


def send(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, smtp: notify.SmtpSettings | None, *,
         dry_run: bool = False, allow_private: bool = False, now: datetime | None = None) -> list[Sent]:
    """Deliver every organization's news to its contacts; what was delivered before is skipped."""
    return deliver(uow_factory, caller, box, smtp, compose(uow_factory, caller), dry_run=dry_run,
                   allow_private=allow_private, now=now)


def deliver(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, smtp: notify.SmtpSettings | None,
            news: list[tuple[int, notify.Notification]], *, dry_run: bool = False, allow_private: bool = False,
            now: datetime | None = None) -> list[Sent]:
    """`_deliver` from synchronous code (the CLI, the anchoring thread): not on an event loop."""
    return asyncio.run(_deliver(uow_factory, caller, box, smtp, news, dry_run=dry_run, allow_private=allow_private,
                                now=now))


async def _deliver(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, smtp: notify.SmtpSettings | None,
                   news: list[tuple[int, notify.Notification]], *, dry_run: bool = False, allow_private: bool = False,
                   now: datetime | None = None) -> list[Sent]:
    """Each (organization id, notification) to the organization's webhook and e-mail, once per
    channel: stored and audited (never with a secret). On an event loop: the database is read
    and written in worker threads, e-mail is sent from one."""
    def load() -> tuple[dict[int, OrgContactRow], dict[int, str | None], set[tuple[str, str]]]:
        with uow_factory() as uow:
            s = uow.session
            contacts = {r.org_id: r for r in s.scalars(select(OrgContactRow))}
            registered = dict(s.execute(select(OrganizationRow.id, OrganizationRow.contact_email)
                                        .where(OrganizationRow.contact_email.is_not(None))).all())
            done = {(k, c) for k, c in s.execute(select(NotificationRow.idempotency_key, NotificationRow.channel)
                                                 .where(NotificationRow.ok.is_(True))).all()}
            return contacts, registered, done

    contacts, registered, done = await asyncio.to_thread(load)
    hooks: list[tuple[notify.Notification, notify.WebhookTarget]] = []
    mails: list[tuple[notify.Notification, notify.EmailTarget]] = []
    report: list[Sent] = []
    org_of: dict[str, int] = {}
    for org_id, n in news:
        c = contacts.get(org_id)
        org_of[n.idempotency_key] = org_id
        email = (c.email if c is not None else None) or registered.get(org_id)
        if (c is None or not c.webhook_url) and not email:
            report.append(Sent(n.recipient_org, n.kind, "none", "", False, "no contact set: cityward orgs contact"))
            continue
        if c is not None and c.webhook_url and c.webhook_secret:
            if (n.idempotency_key, "webhook") in done:
                report.append(Sent(n.recipient_org, n.kind, "webhook", c.webhook_url, True, None, skipped=True))
            else:
                secret = box.open(_org_key(org_id), WEBHOOK_PURPOSE, c.webhook_secret)
                hooks.append((n, notify.WebhookTarget(c.webhook_url, secret)))
        if email:
            if (n.idempotency_key, "email") in done:
                report.append(Sent(n.recipient_org, n.kind, "email", email, True, None, skipped=True))
            else:
                mails.append((n, notify.EmailTarget(email)))
    if dry_run:
        return report + [Sent(n.recipient_org, n.kind, "webhook", t.url, False, "dry run") for n, t in hooks] + \
            [Sent(n.recipient_org, n.kind, "email", t.address, False, "dry run") for n, t in mails]
    deliveries = await notify.deliver_webhooks(hooks, allow_private=allow_private) if hooks else []
    if mails:
        if smtp is None:
            deliveries += [notify.Delivery(n.idempotency_key, "email", t.address, False,
                                           error="no SMTP server configured (CITYWARD_SMTP_URL)") for n, t in mails]
        else:
            deliveries += await notify.send_emails_async(mails, smtp)
    by_key = {n.idempotency_key: n for _o, n in news}

    def store() -> None:
        with uow_factory(write=True) as uow:
            at = now or uow.clock()
            for d in deliveries:
                n = by_key[d.idempotency_key]
                uow.session.add(NotificationRow(
                    idempotency_key=d.idempotency_key, org_id=org_of[d.idempotency_key], kind=n.kind,
                    channel=d.channel, target=d.target[:500], ok=d.ok, status=d.status, attempts=d.attempts,
                    error=(d.error or "")[:500] or None, sent_at=at))
                uow.record(caller, "notification.delivered" if d.ok else "notification.failed", "organization",
                           org_of[d.idempotency_key], after={"kind": n.kind, "channel": d.channel,
                                                             "target": d.target, "status": d.status,
                                                             "attempts": d.attempts,
                                                             "error": (d.error or "")[:200] or None})
                report.append(Sent(n.recipient_org, n.kind, d.channel, d.target, d.ok, d.error))
            uow.commit()

    if deliveries:
        await asyncio.to_thread(store)
    return report


# --- the platform's own alerts to the city ---------------------------------------------------------


@dataclass(frozen=True)
class AlertChannels:
    """How the platform's own alerts reach the city: the same settings as `vulns notify`
    (CITYWARD_SMTP_URL, CITYWARD_SMTP_SENDER, CITYWARD_NOTIFY_PRIVATE_NETWORKS)."""

    smtp: notify.SmtpSettings | None = None
    allow_private: bool = False


def alert_channels(smtp_url: str | None, sender: str | None, allow_private: bool) -> AlertChannels:
    return AlertChannels(smtp_settings(smtp_url, sender), allow_private)


async def alert_city(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, channels: AlertChannels, *,
                     kind: str, subject: str, text: str, payload: dict[str, Any], about: str) -> list[Sent]:
    """Tell the city organization's contacts (its webhook, its e-mail) about something that needs a
    person now, e.g. a firmware image changed on disk. Delivered once per channel for the same
    `kind` and `about` (its idempotency key), stored and audited like every notification; a
    delivery that fails is a `notification.failed` event, never an exception."""
    def cities() -> list[tuple[int, str]]:
        with uow_factory() as uow:
            return [(i, n) for i, n in uow.session.execute(select(OrganizationRow.id, OrganizationRow.name).where(
                OrganizationRow.kind == OrgKind.CITY.value).order_by(OrganizationRow.id))]

    key = hashlib.sha256(json.dumps([kind, about]).encode()).hexdigest()[:40]
    news = [(org_id, notify.Notification(kind=kind, recipient_org=name, subject=subject, text=text,
                                         payload={"kind": kind, "organization": name, **payload},
                                         idempotency_key=key))
            for org_id, name in await asyncio.to_thread(cities)]
    return await _deliver(uow_factory, caller, box, channels.smtp, news, allow_private=channels.allow_private)
