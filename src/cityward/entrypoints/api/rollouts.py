"""/api/v1/firmware and /rollouts: the firmware catalog and bulk operations over HTTP, scoped by
caller. Planning is a POST that stores nothing; creating stores the same plan; progress is polled
from GET /rollouts/{id} (per wave, per status), which is what `rollout watch` shows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from cityward.domain.rollouts import FailureAction, Operation, PlanSummary, WaveOptions
from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.problems import CONFLICT, NOT_FOUND, ROLLOUT_STATE
from cityward.entrypoints.api.schemas import Label, Name, ShortText, _Out
from cityward.services import firmware, rollouts
from cityward.services.inventory import DeviceFilter
from cityward.services.rollouts import RolloutRequest, Target

router = APIRouter(tags=["rollouts"])
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ReleaseOut(_Out):
    id: int
    brand: str
    model: str
    version: str
    size: int
    sha256: str
    key_id: str
    notes: str | None
    has_sbom: bool


@router.get("/firmware", response_model=list[ReleaseOut])
def list_firmware(platform: PlatformDep, caller: CallerDep) -> list[ReleaseOut]:
    """Verified firmware images in the catalog (uploads go through `cityward firmware add`)."""
    return [ReleaseOut.model_validate(r) for r in firmware.list_releases(platform.uow)]


class SelectorIn(BaseModel):
    kind: ShortText | None = None
    zone: Name | None = None
    brand: Label | None = None
    manufacturer: Label | None = None
    firmware: ShortText | None = None
    org: Name | None = None
    tag: ShortText | None = None


class OptionsIn(BaseModel):
    canary: int = Field(1, ge=0, le=10_000)
    waves: list[Annotated[int, Field(ge=1, le=100)]] = Field([10, 50, 100], min_length=1, max_length=20)
    concurrency: int = Field(50, ge=1, le=10_000)
    timeout_s: float | None = Field(None, ge=1, le=86_400, description=(
        "seconds per attempt; none: the operation's expected duration (firmware: the product's upgrade_minutes)"))
    retries: int = Field(1, ge=0, le=10)
    success_threshold: int = Field(90, ge=0, le=100)
    failure_threshold: int = Field(10, ge=0, le=100)
    failure_count: int | None = Field(None, ge=1)
    on_failure: Literal["pause", "abort"] = "pause"


class RolloutIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
    operation: Literal["upgrade_firmware", "rollback_firmware", "set_config", "rotate_password", "reboot",
                       "quarantine", "release"]
    selector: SelectorIn = SelectorIn()
    failing_rule: ShortText | None = None
    devices: list[Annotated[str, Field(max_length=64)]] = Field([], max_length=rollouts.MAX_EXPLICIT_DEVICES)
    release: int | None = Field(None, ge=1, le=2**31 - 1)
    config: Name | None = None
    reason: Annotated[str, Field(max_length=200)] | None = None
    options: OptionsIn = OptionsIn()

    def request(self) -> RolloutRequest:
        o = self.options
        return RolloutRequest(
            name=self.name, operation=Operation(self.operation),
            target=Target(DeviceFilter(**self.selector.model_dump()), self.failing_rule, tuple(self.devices)),
            options=WaveOptions(canary=o.canary, percentages=tuple(o.waves), concurrency=o.concurrency,
                                timeout_s=o.timeout_s, retries=o.retries, success_threshold=o.success_threshold,
                                failure_threshold=o.failure_threshold, failure_count=o.failure_count,
                                on_failure=FailureAction(o.on_failure)),
            release=self.release, config=self.config, reason=self.reason)


class SkipOut(BaseModel):
    device_id: str
    reason: str


class PlanOut(BaseModel):
    rollout: int | None = None
    devices: int
    waves: list[list[str]]
    skipped: list[SkipOut]
    windows: dict[str, str]
    needs_approval: bool
    approval_zones: list[str]
    estimated_s: float


def _plan_out(summary: PlanSummary, rollout_id: int | None = None) -> PlanOut:
    return PlanOut(rollout=rollout_id, devices=summary.devices, waves=summary.waves,
                   skipped=[SkipOut(device_id=s.device_id, reason=s.reason) for s in summary.skipped],
                   windows=summary.windows, needs_approval=summary.needs_approval,
                   approval_zones=summary.approval_zones, estimated_s=summary.estimated / timedelta(seconds=1))


@router.post("/rollouts/plan", response_model=PlanOut)
def plan_rollout(body: RolloutIn, platform: PlatformDep, caller: CallerDep) -> PlanOut:
    """A dry run: the waves, what is skipped and why, windows, approval, duration. Nothing is stored."""
    return _plan_out(rollouts.plan(platform.uow, caller, body.request(), platform.settings.firmware_dir))


@router.post("/rollouts", response_model=PlanOut, status_code=201, responses=CONFLICT)
def create_rollout(body: RolloutIn, platform: PlatformDep, caller: CallerDep) -> PlanOut:
    """Store the plan (it does not start: POST /rollouts/{id}/start)."""
    rid, summary = rollouts.create(platform.uow, caller, body.request(), platform.settings.firmware_dir)
    return _plan_out(summary, rid)


class WaveOut(_Out):
    number: int
    size: int
    counts: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    verdict: str | None


class RolloutOut(_Out):
    id: int
    name: str
    operation: str
    params: dict[str, Any]
    target: dict[str, Any]
    options: dict[str, Any]
    control: str
    control_reason: str | None
    status: str
    counts: dict[str, int]
    waves: list[WaveOut]
    skipped: int
    needs_approval: bool
    created_by: str
    approved_by: str | None
    created_at: datetime
    started_at: datetime | None


@router.get("/rollouts", response_model=list[RolloutOut])
def list_rollouts(platform: PlatformDep, caller: CallerDep,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RolloutOut]:
    return [RolloutOut.model_validate(r) for r in rollouts.list_rollouts(platform.uow, caller, limit)]


@router.get("/rollouts/{rollout_id}", response_model=RolloutOut, responses=NOT_FOUND)
def get_rollout(rollout_id: RolloutId, platform: PlatformDep, caller: CallerDep) -> RolloutOut:
    """Live progress: counts per wave and status; the campaign status is derived from them."""
    return RolloutOut.model_validate(rollouts.get(platform.uow, caller, rollout_id))


class ActionOut(_Out):
    device_id: str
    wave: int
    status: str
    attempts: int
    detail: str | None


@router.get("/rollouts/{rollout_id}/devices", response_model=list[ActionOut], responses=NOT_FOUND)
def rollout_devices(rollout_id: RolloutId, platform: PlatformDep, caller: CallerDep,
                    status: Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"] | None = None,
                    limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> list[ActionOut]:
    return [ActionOut.model_validate(a) for a in rollouts.actions(platform.uow, caller, rollout_id, status=status,
                                                                  limit=limit)]


class ReasonIn(BaseModel):
    reason: Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None


@router.post("/rollouts/{rollout_id}/{verb}", response_model=RolloutOut, responses={**NOT_FOUND, **ROLLOUT_STATE})
def control_rollout(rollout_id: RolloutId, verb: Literal["approve", "start", "pause", "resume", "abort"],
                    platform: PlatformDep, caller: CallerDep, body: ReasonIn | None = None) -> RolloutOut:
    """Approve (another city user than the creator), start, pause, resume or abort. A command the
    rollout's state does not allow (anything once it has finished or been aborted) is a 409."""
    reason = body.reason if body else None
    uow = platform.uow
    if verb == "approve":
        rollouts.approve(uow, caller, rollout_id)
    elif verb == "start":
        rollouts.start(uow, caller, rollout_id)
    elif verb == "pause":
        rollouts.pause(uow, caller, rollout_id, reason)
    elif verb == "resume":
        rollouts.resume(uow, caller, rollout_id)
    else:
        rollouts.abort(uow, caller, rollout_id, reason)
    return RolloutOut.model_validate(rollouts.get(uow, caller, rollout_id))
