"""Publication, acknowledgement and waivers, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from cityward.adapters.storage.models import WaiverRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller, Role
from cityward.domain.policy.document import parse_policy
from cityward.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from cityward.services import audit, policies
from tests.conftest import caller_for
from tests.test_audit import POLICY, fleet  # noqa: F401 - the shared fleet fixture

OTHER_ADMIN = "local:second-admin"


def _second_admin(city: Caller) -> Caller:
    return Caller(actor=OTHER_ADMIN, org_id=city.org_id, org_name=city.org_name, org_kind=city.org_kind,
                  role=Role.ADMIN)


def test_publish_and_acknowledge(platform: Platform, fleet: Caller) -> None:  # noqa: F811
    acme = caller_for(platform, "Acme Integrators", Role.OPERATOR)
    with pytest.raises(NotFound):
        policies.acknowledge(platform.uow, acme)  # nothing is published yet
    with pytest.raises(PermissionDenied):
        policies.acknowledge(platform.uow, fleet)  # the city publishes; its partners acknowledge
    with pytest.raises(PermissionDenied):
        policies.publish(platform.uow, acme, POLICY, "p.yaml")
    with pytest.raises(InvalidInput):
        policies.publish(platform.uow, fleet, b"name: broken\nrules: []", "p.yaml")  # never published
    v1 = policies.publish(platform.uow, fleet, POLICY, "p.yaml")
    assert v1.number == 1 and policies.in_force(platform.uow).number == 1  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        policies.publish(platform.uow, fleet, POLICY, "p.yaml")  # the same text twice is not a new version
    assert policies.unacknowledged(platform.uow, 1) == ["Acme Integrators", "Bolt Systems"]
    assert policies.acknowledge(platform.uow, acme) == 1
    with pytest.raises(Conflict):
        policies.acknowledge(platform.uow, acme)
    viewer = caller_for(platform, "Bolt Systems", Role.VIEWER)
    with pytest.raises(PermissionDenied):
        policies.acknowledge(platform.uow, viewer)
    assert policies.unacknowledged(platform.uow, 1) == ["Bolt Systems"]
    v2 = policies.publish(platform.uow, fleet, POLICY + b"\n# tightened\n", "p.yaml")
    assert v2.number == 2 and policies.unacknowledged(platform.uow, 2) == ["Acme Integrators", "Bolt Systems"]


def test_waivers_need_another_approver_and_expire(platform: Platform, fleet: Caller) -> None:  # noqa: F811
    policy = parse_policy(POLICY, "p.yaml")
    acme = caller_for(platform, "Acme Integrators", Role.OPERATOR)
    future = datetime.now(UTC) + timedelta(days=30)
    for selector, reason, expires in [({"device": "SL-00001", "zone": "north"}, "r", future),
                                      ({"device": "SL-00001"}, " ", future),
                                      ({"device": "SL-00001"}, "r", datetime.now(UTC) - timedelta(days=1)),
                                      ({"colour": "red"}, "r", future)]:
        with pytest.raises(InvalidInput):
            policies.request_waiver(platform.uow, acme, "CRED-001", selector, reason, expires)
    w = policies.request_waiver(platform.uow, acme, "CRED-001", {"device": "SL-00001"},
                                "replacement scheduled next month", future)
    # A zone in any case: "NORTH" is the zone "north" (domain.names).
    zone_waiver = policies.request_waiver(platform.uow, fleet, "ORIG-002", {"zone": "NORTH"}, "pilot", future)
    with pytest.raises(PermissionDenied):
        policies.decide_waiver(platform.uow, acme, w.id, approve=True)  # partners do not approve
    with pytest.raises(PermissionDenied):
        policies.decide_waiver(platform.uow, fleet, zone_waiver.id, approve=True)  # not your own request
    policies.decide_waiver(platform.uow, fleet, w.id, approve=True)
    policies.decide_waiver(platform.uow, _second_admin(fleet), zone_waiver.id, approve=True)

    report = audit.run_audit(platform.uow, fleet, policy, POLICY, datetime.now(UTC))
    waived = {(f.device_id, f.rule_id) for f in report.finding_list() if f.waived}
    # The zone waiver covers north and the zones inside it (north-harbour).
    assert waived == {("SL-00001", "CRED-001"), ("SL-00001", "ORIG-002"), ("SL-00002", "ORIG-002")}
    assert {(f.device_id, f.rule_id) for f in report.finding_list() if not f.waived} >= {("SL-00003", "CRED-001")}
    harbour = next(s for s in report.scores["zone"] if s.key == "north-harbour")
    assert harbour.failing == 1  # SVC-001 (high) is not waived; CRED-001 is

    with platform.uow(write=True) as uow:  # time passes: the device waiver expires
        uow.session.execute(update(WaiverRow).where(WaiverRow.id == w.id)
                            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        uow.commit()
    later = audit.run_audit(platform.uow, fleet, policy, POLICY, datetime.now(UTC))
    assert ("SL-00001", "CRED-001") not in {(f.device_id, f.rule_id) for f in later.finding_list() if f.waived}
    assert {w.status for w in policies.list_waivers(platform.uow, acme)} == {"approved"}
    assert len(policies.list_waivers(platform.uow, fleet)) == 2
