"""/api/v1/policies, /audits and /waivers: policy as code over HTTP, scoped like everything else."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from cityward.domain.limits import MAX_POLICY_BYTES
from cityward.domain.policy.document import parse_policy
from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.problems import CONFLICT, NOT_FOUND
from cityward.entrypoints.api.schemas import NO_CONTROL, _Out
from cityward.errors import NotFound
from cityward.services import audit, policies

router = APIRouter(tags=["policy and audit"])
MAX_POLICY_CHARS = MAX_POLICY_BYTES  # domain/limits.py


class PolicyIn(BaseModel):
    yaml: str = Field(max_length=MAX_POLICY_CHARS, description="the policy file's text (docs/policy.md)")


class PolicyOut(BaseModel):
    version: int | None
    name: str
    rules: int
    not_acknowledged: list[str] = []


class RunOut(_Out):
    id: int
    policy: str
    policy_version: int | None
    at: datetime
    run_by: str
    devices: int
    findings: int
    new: int
    resolved: int
    score: float


class RunDetailOut(RunOut):
    summary: dict[str, Any]


class FindingOut(_Out):
    id: int
    device_id: str
    rule_id: str
    severity: str
    evidence: dict[str, Any]
    responsible: str | None
    status: str
    waiver: int | None


class WaiverIn(BaseModel):
    rule_id: str = Field(min_length=1, max_length=64, pattern=NO_CONTROL)
    selector: dict[str, Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]] = Field(
        description="exactly one of device, zone, kind, product, tag")
    reason: str = Field(min_length=1, max_length=1000, pattern=NO_CONTROL)
    expires_at: datetime


class WaiverOut(_Out):
    id: int
    rule_id: str
    selector: dict[str, str]
    reason: str
    requested_by: str
    expires_at: datetime
    status: str
    decided_by: str | None


@router.post("/policies/validate", response_model=PolicyOut)
def validate_policy(body: PolicyIn, caller: CallerDep) -> PolicyOut:
    """Check a policy without storing anything; problems come back as a 422 listing each one."""
    policy = parse_policy(body.yaml.encode(), "policy")
    return PolicyOut(version=None, name=policy.name, rules=len(policy.rules))


@router.post("/policies", response_model=PolicyOut, status_code=201, responses=CONFLICT)
def publish_policy(body: PolicyIn, platform: PlatformDep, caller: CallerDep) -> PolicyOut:
    """Publish an immutable, numbered version (city administrators)."""
    published = policies.publish(platform.uow, caller, body.yaml.encode(), "policy")
    return PolicyOut(version=published.number, name=published.name, rules=len(published.policy.rules),
                     not_acknowledged=policies.unacknowledged(platform.uow, published.number))


@router.get("/policies/in-force", response_model=PolicyOut, responses=NOT_FOUND)
def policy_in_force(platform: PlatformDep, caller: CallerDep) -> PolicyOut:
    current = policies.in_force(platform.uow)
    if current is None:
        raise NotFound("no policy is published yet")
    return PolicyOut(version=current.number, name=current.name, rules=len(current.policy.rules),
                     not_acknowledged=policies.unacknowledged(platform.uow, current.number))


@router.post("/policies/{version}/ack", response_model=PolicyOut, responses={**NOT_FOUND, **CONFLICT})
def acknowledge_policy(version: Annotated[int, Path(ge=1, le=2**31 - 1)], platform: PlatformDep,
                       caller: CallerDep) -> PolicyOut:
    """Your organization acknowledges this version."""
    policies.acknowledge(platform.uow, caller, version)
    current = policies.in_force(platform.uow)
    assert current is not None
    return PolicyOut(version=version, name=current.name, rules=len(current.policy.rules),
                     not_acknowledged=policies.unacknowledged(platform.uow, version))


@router.post("/audits", response_model=RunOut, status_code=201)
def run_audit(platform: PlatformDep, caller: CallerDep) -> RunOut:
    """Audit the devices you may see against the policy in force (or the shipped baseline)."""
    chosen = policies.policy_to_audit(platform.uow)
    report = audit.run_audit(platform.uow, caller, chosen.policy, chosen.text, version=chosen.version)
    view, _summary = audit.get_run(platform.uow, caller, report.run_id)
    return RunOut.model_validate(view)


@router.get("/audits", response_model=list[RunOut])
def list_audits(platform: PlatformDep, caller: CallerDep,
                limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RunOut]:
    return [RunOut.model_validate(r) for r in audit.list_runs(platform.uow, caller, limit)]


@router.get("/audits/{run_id}", response_model=RunDetailOut, responses=NOT_FOUND)
def get_audit(run_id: Annotated[int, Path(ge=1, le=2**31 - 1)], platform: PlatformDep,
              caller: CallerDep) -> RunDetailOut:
    view, summary = audit.get_run(platform.uow, caller, run_id)
    return RunDetailOut(**RunOut.model_validate(view).model_dump(), summary=summary)


@router.get("/audits/{run_id}/findings", response_model=list[FindingOut], responses=NOT_FOUND)
def audit_findings(
    run_id: Annotated[int, Path(ge=1, le=2**31 - 1)], platform: PlatformDep, caller: CallerDep,
    rule: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL)] = None,
    severity: Annotated[str | None, Query(pattern="^(low|medium|high|critical)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="finding id to continue after")] = None,
) -> list[FindingOut]:
    items = audit.list_findings(platform.uow, caller, run_id, rule=rule, severity=severity, limit=limit, after=after)
    return [FindingOut.model_validate(f) for f in items]


@router.get("/waivers", response_model=list[WaiverOut])
def list_waivers(platform: PlatformDep, caller: CallerDep) -> list[WaiverOut]:
    return [WaiverOut.model_validate(w) for w in policies.list_waivers(platform.uow, caller)]


@router.post("/waivers", response_model=WaiverOut, status_code=201)
def request_waiver(body: WaiverIn, platform: PlatformDep, caller: CallerDep) -> WaiverOut:
    view = policies.request_waiver(platform.uow, caller, body.rule_id, body.selector, body.reason, body.expires_at)
    return WaiverOut.model_validate(view)


@router.post("/waivers/{waiver_id}/approve", response_model=WaiverOut, responses={**NOT_FOUND, **CONFLICT})
def approve_waiver(waiver_id: Annotated[int, Path(ge=1, le=2**31 - 1)], platform: PlatformDep,
                   caller: CallerDep) -> WaiverOut:
    return WaiverOut.model_validate(policies.decide_waiver(platform.uow, caller, waiver_id, approve=True))


@router.post("/waivers/{waiver_id}/reject", response_model=WaiverOut, responses={**NOT_FOUND, **CONFLICT})
def reject_waiver(waiver_id: Annotated[int, Path(ge=1, le=2**31 - 1)], platform: PlatformDep,
                  caller: CallerDep) -> WaiverOut:
    return WaiverOut.model_validate(policies.decide_waiver(platform.uow, caller, waiver_id, approve=False))
