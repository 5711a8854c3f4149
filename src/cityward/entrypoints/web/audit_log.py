"""Dashboard page for the audit log: searchable, with the hash chain's verification status; and
the history shown on a device's page (its rollout actions and the events about it)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cityward.bootstrap import Platform
from cityward.domain.auditchain import AuditEvent
from cityward.domain.organizations import Caller
from cityward.entrypoints.web.common import SessionDep, check_csrf, page, platform_of
from cityward.services import auditanchors, auditlog, rollouts

router = APIRouter(include_in_schema=False)
PER_PAGE = 50
HISTORY = 50  # rows of each kind on a device's page
_ACTION = re.compile(r"[a-z0-9_.]+\*?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEQ = re.compile(r"[0-9]{1,10}")  # not str.isdigit(): it accepts "²", which int() refuses
# Suggestions for the action box (any prefix works): the families of actions the services record.
FAMILIES = ("advisory.", "audit.", "auditlog.", "broker.", "city_ca.", "config.", "credentials.", "devices.",
            "discovery.", "firmware.", "installation.", "kev.", "notification.", "organization.", "orgs.", "policy.",
            "products.", "rollout.", "sbom.", "tokens.", "users.", "vulnerabilities.", "waiver.", "zones.")
# No service records a secret (checked where each event is written); any key like these is
# hidden anyway, so that a future careless event cannot show one here.
_SECRET_KEY = re.compile(r"password|passwd|secret|token|private_key|api_key", re.IGNORECASE)
_LONGEST = 4000  # characters of one before/after shown; the API has the whole event
_SMALL = 6  # keys: a payload up to this size is shown whole, a larger snapshot as its changes
_TOKEN_VALUE = re.compile(r"cw_[A-Za-z0-9]{8,}_[A-Za-z0-9_-]{16,}")  # an API token as issued


@dataclass(frozen=True)
class Search:
    """What the form asked for, as typed (to show it again) and as understood (to query)."""

    typed: dict[str, str]
    action: str | None = None
    action_prefix: str | None = None
    actor: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None


@dataclass(frozen=True)
class EventLine:
    """An audit event ready to show: times in UTC, before/after as compact JSON without secrets."""

    seq: int
    at: str
    actor: str
    action: str
    target_type: str
    target_id: str
    target_url: str | None
    before: str | None
    after: str | None


Text = Annotated[str, Query(max_length=200)]


@router.get("/audit-log", response_class=HTMLResponse)
def audit_log(request: Request, active: SessionDep, action: Annotated[str, Query(max_length=65)] = "",
              actor: Text = "", target: Text = "", since: Annotated[str, Query(alias="from", max_length=32)] = "",
              until: Annotated[str, Query(alias="to", max_length=32)] = "",
              before: Annotated[str, Query(max_length=12)] = "") -> HTMLResponse:
    platform = platform_of(request)
    search, problems = parse_search(action=action, actor=actor, target=target, since=since, until=until,
                                    before=before)
    events: list[AuditEvent] = []
    if not problems:
        events = auditlog.list_events(
            platform.uow, active.caller, action=search.action, action_prefix=search.action_prefix, actor=search.actor,
            target=search.target, since=search.since, until=search.until, before_seq=search.before, limit=PER_PAGE)
    query = {k: v for k, v in search.typed.items() if v and k != "before"}
    # Sequence numbers are contiguous from 1, so a full page ending above 1 may have more.
    more = len(events) == PER_PAGE and events[-1].seq > 1
    return page(request, "audit_log.html", 400 if problems else 200, session=active, active="audit-log",
                events=event_lines(events), show_target=True, search=search.typed, problems=problems,
                invalid={name for name, _message in problems}, families=FAMILIES,
                verification=_verification(platform, active.caller),
                older_url=f"/audit-log?{urlencode({**query, 'before': events[-1].seq})}" if more else None,
                newest_url=f"/audit-log?{urlencode(query)}" if search.before is not None else None)


@router.post("/audit-log/verify")
def verify(request: Request, active: SessionDep, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Walk the whole chain now (city admins; the service refuses the others) and record the result."""
    check_csrf(active, csrf_token)
    platform = platform_of(request)
    settings = platform.settings
    public = auditanchors.signing_key(settings.secret_key_bytes()).public_key()
    auditanchors.verify_and_record(platform.uow, active.caller, public, settings.audit_anchor_file)
    return RedirectResponse("/audit-log", status_code=303)


def _verification(platform: Platform, caller: Caller) -> dict[str, Any]:
    """The chain's status at the top of the page. Walking a million events takes half a minute, so
    the page shows the last recorded walk and offers a new one, rather than walking on every view."""
    if not caller.is_city_admin:
        return {"allowed": False}
    last = auditlog.last_verification(platform.uow, caller)
    return {"allowed": True, "last": last, "at": _utc(last.at) if last else None}


def parse_search(*, action: str, actor: str, target: str, since: str, until: str,
                 before: str) -> tuple[Search, list[tuple[str, str]]]:
    """The form's fields checked one by one; each problem names its field (`from`, `to`, ...)."""
    typed = {"action": action.strip(), "actor": actor.strip(), "target": target.strip(), "from": since.strip(),
             "to": until.strip(), "before": before.strip()}
    problems: list[tuple[str, str]] = []
    wanted = typed["action"].lower()
    exact = prefix = None
    if wanted and not _ACTION.fullmatch(wanted):
        problems.append(("action", "use letters, digits, '.' and '_' (e.g. rollout.created), ending in '.' or '*' "
                                   "for every action that starts so"))
    elif wanted.endswith(("*", ".")):
        prefix = wanted.rstrip("*")
    elif wanted:
        exact = wanted
    for name in ("actor", "target"):
        if _CONTROL.search(typed[name]):
            problems.append((name, "contains control characters"))
    first, first_problem = _day(typed["from"])
    last, last_problem = _day(typed["to"])
    for name, problem in (("from", first_problem), ("to", last_problem)):
        if problem:
            problems.append((name, problem))
    if first and last and last < first:
        problems.append(("to", f"{last.isoformat()} is before the first day ({first.isoformat()})"))
    seq = None
    if typed["before"]:
        if _SEQ.fullmatch(typed["before"]) and 1 <= int(typed["before"]) <= 2**31 - 1:
            seq = int(typed["before"])
        else:
            problems.append(("before", "must be an event's sequence number (a whole number from 1)"))
    since_at = datetime.combine(first, time.min, UTC) if first else None
    until_at = datetime.combine(last, time.min, UTC) + timedelta(days=1) if last and last < date.max else None
    return Search(typed, exact, prefix, typed["actor"] or None, typed["target"] or None, since_at, until_at,
                  seq), problems


def _day(text: str) -> tuple[date | None, str | None]:
    if not text:
        return None, None
    try:
        return date.fromisoformat(text), None
    except ValueError:
        return None, f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2025-03-31"


def event_lines(events: list[AuditEvent]) -> list[EventLine]:
    lines = []
    for e in events:
        before, after = _changed(e.before, e.after)
        lines.append(EventLine(e.seq, _utc(e.at), e.actor, e.action, e.target_type, e.target_id,
                               _target_url(e.target_type, e.target_id), _compact(before), _compact(after)))
    return lines


def _utc(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return f"{at:%Y-%m-%d %H:%M:%S}"


def _target_url(kind: str, target_id: str) -> str | None:
    if kind == "device":
        return f"/devices/{quote(target_id, safe='')}"
    if kind == "rollout" and target_id.isdigit():
        return f"/rollouts/{target_id}"
    return None


def _changed(before: Any, after: Any) -> tuple[Any, Any]:
    """Two snapshots of one thing (e.g. a device's record before and after an edit) reduced to what
    differs; small payloads stay whole, as their unchanged keys say what changed (e.g. which duty)."""
    if not isinstance(before, dict) or not isinstance(after, dict) or len({**before, **after}) <= _SMALL:
        return before, after
    keys = [k for k in {**before, **after} if before.get(k) != after.get(k) or (k in before) != (k in after)]
    if not keys:
        return before, after
    return ({k: before[k] for k in keys if k in before}, {k: after[k] for k in keys if k in after})


def _compact(value: Any) -> str | None:
    if value is None:
        return None
    shown = json.dumps(_redacted(value), sort_keys=True, ensure_ascii=False, default=str)
    return shown if len(shown) <= _LONGEST else shown[:_LONGEST] + "…"


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<redacted>" if _SECRET_KEY.search(str(k)) and not isinstance(v, bool | None) else _redacted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str):
        return _TOKEN_VALUE.sub("<redacted>", value)
    return value


@dataclass(frozen=True)
class DeviceHistory:
    operations: list[tuple[rollouts.DeviceActionView, str]]  # with its time in UTC
    events: list[EventLine]


def device_history(platform: Platform, caller: Caller, device_id: str) -> DeviceHistory:
    """For the device page: both indexed lookups by device, ~50 rows each, scoped like the rest."""
    events = auditlog.list_events(platform.uow, caller, target_type="device", target=device_id, limit=HISTORY)
    operations = rollouts.device_history(platform.uow, caller, device_id, limit=HISTORY)
    return DeviceHistory([(a, _utc(a.updated_at)) for a in operations], event_lines(events))
