"""/api/v1/auditlog: the hash-chained record of every change, and its verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cityward.entrypoints.api.auth import CallerDep, PlatformDep
from cityward.entrypoints.api.pages import Limit
from cityward.entrypoints.api.schemas import (
    NO_CONTROL,
    AuditAnchorCheckOut,
    AuditChainOut,
    AuditEventOut,
    AuditEventPageOut,
)
from cityward.services import auditanchors, auditlog

router = APIRouter(prefix="/auditlog", tags=["audit log"])


@router.get("", response_model=AuditEventPageOut)
def list_events(
    platform: PlatformDep,
    caller: CallerDep,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL,
                                        description="e.g. devices.imported")] = None,
    target: Annotated[str | None, Query(max_length=200, pattern=NO_CONTROL,
                                        description="target id")] = None,
    limit: Limit = 100,
    before_seq: Annotated[int | None, Query(
        ge=1, le=2**31 - 1, description="`next_before_seq` of the previous page")] = None,
) -> AuditEventPageOut:
    """Newest first; the city sees every event, a partner those of its organization."""
    events = auditlog.list_events(platform.uow, caller, action=action, target=target,
                                  limit=limit, before_seq=before_seq)
    # Sequence numbers are contiguous from 1, so a full page ending above 1 may have more.
    more = len(events) == limit and events[-1].seq > 1
    return AuditEventPageOut(items=[AuditEventOut.model_validate(e) for e in events],
                             next_before_seq=events[-1].seq if more else None)


@router.get("/verify", response_model=AuditChainOut)
def verify_auditlog(platform: PlatformDep, caller: CallerDep) -> AuditChainOut:
    """Walk the whole chain and check it against its latest signed anchor; `ok` false names the first
    event that does not hold, or (`anchor.reason`) a tail cut off or events rewritten since the anchor."""
    settings = platform.settings
    public = auditanchors.signing_key(settings.secret_key_bytes()).public_key()
    report, check = auditanchors.verify(platform.uow, caller, public, settings.audit_anchor_file)
    return AuditChainOut(ok=report.ok and check.ok, events=report.events, head=report.head,
                         first_broken=report.first_broken, reason=report.reason,
                         anchor=AuditAnchorCheckOut.model_validate(check.as_dict()))
