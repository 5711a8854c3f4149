"""The audit chain: every change is logged in the same transaction; tampering is named."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.errors import Conflict
from cityward.services import auditlog, organizations, tokens, zones


@pytest.fixture
def logged(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "downtown")
    organizations.create_org(platform.uow, city, "Alpha", "integrator")
    tokens.create_token(platform.uow, city, "Alpha", "ops", "operator", timedelta(days=1))
    zones.assign_duty(platform.uow, city, "downtown", "maintain", "Alpha")
    return city


def test_every_change_is_logged_and_the_chain_verifies(platform: Platform, logged: Caller) -> None:
    events = auditlog.list_events(platform.uow, logged)
    actions = [e.action for e in reversed(events)]
    assert actions == ["installation.initialized", "tokens.created", "zones.created", "orgs.created",
                       "tokens.created", "zones.duty_assigned"]
    assert events[0].actor == "local:test" and events[0].after["org"] == "Alpha"
    report = auditlog.verify_auditlog(platform.uow, logged)
    assert report.ok and report.events == 6 and report.head == events[0].hash
    assert auditlog.chain_contains(platform.uow, logged, report.head)


def test_a_failed_change_logs_nothing(platform: Platform, logged: Caller) -> None:
    with pytest.raises(Conflict):
        organizations.create_org(platform.uow, logged, "Alpha", "integrator")
    assert len(auditlog.list_events(platform.uow, logged)) == 6


def _tamper(platform: Platform, sql: str) -> None:
    with platform.engine.begin() as conn:
        conn.execute(text(sql))


@pytest.mark.parametrize(("sql", "broken", "reason"), [
    ("UPDATE audit_events SET actor = 'someone else' WHERE seq = 3", 3, "changed"),
    ("UPDATE audit_events SET after = '{\"name\": \"Evil\"}' WHERE seq = 4", 4, "changed"),
    ("DELETE FROM audit_events WHERE seq = 2", 3, "jumps"),
    ("UPDATE audit_events SET seq = seq + 100 WHERE seq = 2", 3, "jumps"),
])
def test_tampering_is_detected_and_named(platform: Platform, logged: Caller, sql: str, broken: int,
                                         reason: str) -> None:
    _tamper(platform, sql)
    report = auditlog.verify_auditlog(platform.uow, logged)
    assert not report.ok and report.first_broken == broken and reason in (report.reason or "")


def test_reordering_is_detected(platform: Platform, logged: Caller) -> None:
    # Swap events 2 and 3 entirely (content and hashes), keeping the sequence numbers.
    _tamper(platform, "UPDATE audit_events SET seq = -2 WHERE seq = 2")
    _tamper(platform, "UPDATE audit_events SET seq = 2 WHERE seq = 3")
    _tamper(platform, "UPDATE audit_events SET seq = 3 WHERE seq = -2")
    report = auditlog.verify_auditlog(platform.uow, logged)
    assert report.first_broken == 2


def test_truncated_tail_is_caught_by_an_anchored_head(platform: Platform, logged: Caller) -> None:
    head = auditlog.verify_auditlog(platform.uow, logged).head
    _tamper(platform, "DELETE FROM audit_events WHERE seq = 6")
    assert auditlog.verify_auditlog(platform.uow, logged).ok  # the rest still chains…
    assert not auditlog.chain_contains(platform.uow, logged, head)  # …but the anchor is gone
