"""Dashboard pages for rollouts: the list, one rollout with its waves updating live, and its
controls (start, approve, pause, resume, abort), offered by role and enforced by the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cityward.domain.access import Action, may
from cityward.domain.rollouts import RolloutState, allowed_commands
from cityward.entrypoints.web.common import SessionDep, check_csrf, page, platform_of
from cityward.errors import Conflict
from cityward.services import executors, rollouts, users

router = APIRouter(include_in_schema=False)
_VERBS = {"start": rollouts.start, "approve": rollouts.approve, "pause": rollouts.pause, "resume": rollouts.resume,
          "abort": rollouts.abort}


def _buttons(active: users.WebSession, shown: rollouts.RolloutView) -> list[str]:
    """The buttons the domain's state machine allows from the rollout's state (the services
    refuse the rest anyway)."""
    caller = active.caller
    if not may(caller, Action.CONTROL):  # viewers, and kinds that run no rollouts
        return []
    offered = [c.value for c in allowed_commands(RolloutState(shown.status))]
    if "approve" in offered and (not caller.is_city or shown.created_by == caller.actor):
        offered.remove("approve")  # a second pair of eyes: another city operator
    return offered


@router.get("/rollouts", response_class=HTMLResponse)
def rollout_list(request: Request, active: SessionDep) -> HTMLResponse:
    found = rollouts.list_rollouts(platform_of(request).uow, active.caller, limit=100)
    return page(request, "rollouts.html", session=active, active="rollouts", rollouts=found)


def _waiting(request: Request, shown: rollouts.RolloutView) -> executors.ExecutorWait | None:
    """Set when the rollout has work for an executor and none looked for work lately: started
    rollouts are carried out by an executor process, and the page says so instead of standing still."""
    if shown.status not in ("running", "aborting"):
        return None
    return executors.waiting(platform_of(request).uow)


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout_page(request: Request, active: SessionDep, rollout_id: int) -> HTMLResponse:
    shown = rollouts.get(platform_of(request).uow, active.caller, rollout_id)
    return page(request, "rollout.html", session=active, active="rollouts", r=shown, buttons=_buttons(active, shown),
                waiting=_waiting(request, shown))


@router.get("/rollouts/{rollout_id}/progress", response_class=HTMLResponse)
def rollout_progress(request: Request, active: SessionDep, rollout_id: int) -> HTMLResponse:
    """The progress part alone: static/live.js swaps it in every two seconds, without a reload."""
    shown = rollouts.get(platform_of(request).uow, active.caller, rollout_id)
    return page(request, "_progress.html", session=active, r=shown, buttons=_buttons(active, shown),
                waiting=_waiting(request, shown))


@router.post("/rollouts/{rollout_id}/{verb}")
def rollout_control(request: Request, active: SessionDep, rollout_id: int, verb: str,
                    csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(active, csrf_token)
    act = _VERBS.get(verb)
    if act is None:
        raise Conflict(f"{verb!r} is not something a rollout can do", hint="start, approve, pause, resume or abort")
    act(platform_of(request).uow, active.caller, rollout_id)
    return RedirectResponse(f"/rollouts/{rollout_id}", status_code=303)
