"""Dashboard pages for policy findings: by rule, zone and organization; a selection becomes a
remediation rollout, its plan shown before anything runs."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cityward.domain.policy.document import Remediation, Severity
from cityward.domain.rollouts import Operation
from cityward.entrypoints.web.common import SessionDep, check_csrf, may_act, page, platform_of
from cityward.errors import InvalidInput, Problem
from cityward.services import audit, configs, rollouts, users
from cityward.services.rollouts import RolloutRequest, Target

router = APIRouter(include_in_schema=False)
PER_PAGE = 100
Text = Annotated[str, Query(max_length=100)]
FormText = Annotated[str, Form(max_length=200)]
# What this page can fill in safely for a finding. A firmware upgrade needs a catalog release that
# fits each product: an advisory's page (or `cityward rollout create --release`) chooses it.
OPERATIONS: dict[Operation, str] = {
    Operation.ROTATE_PASSWORD: "rotate the password (a new one per device)",
    Operation.RENEW_CERTIFICATE: "renew the device certificate",
    Operation.SET_CONFIG: "apply a desired configuration",
    Operation.REBOOT: "reboot",
    Operation.QUARANTINE: "quarantine (isolate until released)",
}
# The operation preselected for a rule, from the remediation its policy names.
SUGGESTED: dict[str, Operation] = {
    Remediation.ROTATE_CREDENTIALS.value: Operation.ROTATE_PASSWORD,
    Remediation.RENEW_CERTIFICATE.value: Operation.RENEW_CERTIFICATE,
    Remediation.APPLY_CONFIGURATION.value: Operation.SET_CONFIG,
    Remediation.DISABLE_SERVICES.value: Operation.SET_CONFIG,
    Remediation.RESTRICT_REMOTE_ACCESS.value: Operation.SET_CONFIG,
    Remediation.QUARANTINE.value: Operation.QUARANTINE,
}


@router.get("/findings", response_class=HTMLResponse)
def findings(request: Request, active: SessionDep, rule: Text = "", zone: Text = "", org: Text = "",
             severity: Text = "", after: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> HTMLResponse:
    platform = platform_of(request)
    chosen = {"rule": rule.strip(), "zone": zone.strip(), "org": org.strip(), "severity": severity.strip()}
    flt = audit.FindingsFilter(**{k: v or None for k, v in chosen.items()})
    error = None
    try:
        found = audit.browse_findings(platform.uow, active.caller, flt, limit=PER_PAGE, after=after)
    except InvalidInput as exc:  # a filter naming a rule, zone, organization or severity that does not exist
        found, error = audit.FindingsPage(None, [], [], None), exc.message
    query = {k: v for k, v in chosen.items() if v}
    acting = may_act(active) and found.run is not None
    chosen_rule = next((r for r in found.by_rule if r.rule_id == flt.rule), None)
    suggested = SUGGESTED.get(chosen_rule.remediation or "") if chosen_rule else None
    return page(request, "findings.html", 400 if error else 200, session=active, active="findings", page=found,
                filters=chosen, error=error, first=after is None, acting=acting,
                chosen_rule=chosen_rule, operations=OPERATIONS, suggested=suggested,
                configs=[c.name for c in configs.list_desired(platform.uow)] if acting else [],
                severities=[s.value for s in sorted(Severity, key=lambda s: -s.rank)],
                rule_url=lambda rid: f"/findings?{urlencode({**query, 'rule': rid})}",
                next_url=f"/findings?{urlencode({**query, 'after': found.next_after})}" if found.next_after else None,
                first_url=f"/findings?{urlencode(query)}")


def _request(selected: list[str], operation: str, rule: str, target: str, config: str,
             reason: str, name: str) -> RolloutRequest:
    """The rollout the form asks for, checked before the services plan it."""
    op = next((o for o in OPERATIONS if o.value == operation), None)
    if op is None:
        raise InvalidInput(f"{operation or 'no operation'!r} is not an operation this page plans",
                           [Problem(f"one of {', '.join(o.value for o in OPERATIONS)}", field="operation")],
                           hint="choose one of the operations offered; firmware upgrades start from an advisory")
    rule = rule.strip()
    whole_rule = target == "rule"
    if whole_rule and not rule:
        raise InvalidInput("choose a rule first: every device failing it is the target",
                           [Problem("no rule chosen", field="rule")])
    ids = tuple(sorted({d.strip() for d in selected if d.strip()})) if not whole_rule else ()
    if not whole_rule and not ids:
        raise InvalidInput("select at least one device to remediate", [Problem("nothing selected", field="device")],
                           hint="tick the devices in the findings table, or plan for every device failing a rule")
    if len(ids) > rollouts.MAX_EXPLICIT_DEVICES:
        raise InvalidInput(f"{len(ids):,} devices selected: a rollout names at most "
                           f"{rollouts.MAX_EXPLICIT_DEVICES:,} devices",
                           [Problem("too many", field="device")], hint="plan for every device failing the rule")
    if any(len(d) > 64 for d in ids):
        raise InvalidInput("a selected device id is longer than any device id", [Problem("too long", field="device")])
    if op is Operation.SET_CONFIG and not config.strip():
        raise InvalidInput("a configuration rollout needs the desired configuration to apply",
                           [Problem("none chosen", field="config")], hint="choose one, or set one with "
                           "`cityward config set`")
    if whole_rule:
        what = f"every device failing {rule}"
    else:
        what = f"{len(ids)} device{'' if len(ids) == 1 else 's'}" + (f" failing {rule}" if rule else "")
    return RolloutRequest(name=name.strip() or f"findings: {op.value} on {what}", operation=op,
                          target=Target(failing_rule=rule or None, device_ids=ids),
                          config=(config.strip() or None) if op is Operation.SET_CONFIG else None,
                          reason=(reason.strip() or None) if op is Operation.QUARANTINE else None)


def _form(req: RolloutRequest, target: str) -> dict[str, Any]:
    """What the confirmation form sends back: the same request, to be planned again and stored."""
    return {"operation": req.operation.value, "rule": req.target.failing_rule or "", "target": target,
            "config": req.config or "", "reason": req.reason or "", "name": req.name,
            "devices": list(req.target.device_ids)}


def _requested(active: SessionDep, csrf_token: FormText = "", device: Annotated[list[str] | None, Form()] = None,
               operation: FormText = "", rule: FormText = "", target: FormText = "selected", config: FormText = "",
               reason: FormText = "", name: FormText = "") -> tuple[RolloutRequest, str]:
    """The remediation form (the plan's and its confirmation's): CSRF checked, the request built."""
    check_csrf(active, csrf_token)
    return _request(device or [], operation, rule, target, config, reason, name), target


Requested = Annotated[tuple[RolloutRequest, str], Depends(_requested)]


@router.post("/findings/plan", response_class=HTMLResponse)
def plan(request: Request, active: SessionDep, requested: Requested) -> HTMLResponse:
    """The dry run: the plan as `rollout plan` shows it; nothing is stored or sent."""
    req, target = requested
    platform = platform_of(request)
    try:
        summary = rollouts.plan(platform.uow, active.caller, req, platform.settings.firmware_dir)
    except InvalidInput as exc:  # e.g. every device skipped: the reasons are the problems
        return _refused(request, active, req, exc)
    return page(request, "remediate.html", session=active, active="findings", mode="findings", req=req,
                summary=summary, form=_form(req, target), back=_back(req))


@router.post("/findings/create")
def create(request: Request, active: SessionDep, requested: Requested) -> Response:
    """The confirmed plan, stored (planned again inside the write: devices may have changed)."""
    req, _target = requested
    platform = platform_of(request)
    try:
        rollout_id, _summary = rollouts.create(platform.uow, active.caller, req, platform.settings.firmware_dir)
    except InvalidInput as exc:
        return _refused(request, active, req, exc)
    return RedirectResponse(f"/rollouts/{rollout_id}", status_code=303)


def _refused(request: Request, active: users.WebSession, req: RolloutRequest, exc: InvalidInput) -> HTMLResponse:
    return page(request, "remediate.html", 422, session=active, active="findings", mode="findings",
                req=req, error=exc.message, problems=exc.problems, hint=exc.hint, back=_back(req))


def _back(req: RolloutRequest) -> str:
    rule = req.target.failing_rule
    return f"/findings?{urlencode({'rule': rule})}" if rule else "/findings"
