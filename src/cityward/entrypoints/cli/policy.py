"""`cityward policy`: check a policy file, list the facts conditions may use, show control coverage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cityward.domain.policy.document import Policy, coverage
from cityward.domain.policy.expr import FUNCTIONS
from cityward.domain.policy.facts import FACTS
from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.devices import parse_age
from cityward.entrypoints.cli.render import out, print_json, table
from cityward.errors import InvalidInput
from cityward.services import policies
from cityward.services.policies import baseline_path

app = typer.Typer(help="Security policy as code: validate, facts, controls.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="Policy file (default: the shipped baseline).")]


def load_policy(path: Path | None) -> Policy:
    return policies.read_policy_file(path or baseline_path())[0]


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Policy file (YAML).")]) -> None:
    """Check a policy: YAML, rule fields, controls, and every condition (with its column)."""
    policy = load_policy(file)
    out.print(f"{file}: [green]valid[/] — {len(policy.rules)} rules in policy {policy.name!r}")


@app.command()
def facts(json_out: JsonOpt = False) -> None:
    """The device facts a condition may use, with their types."""
    if json_out:
        print_json([{"name": f.name, "type": f.type.value, "description": f.description,
                     "values": sorted(f.values) if f.values else None} for f in FACTS.values()])
        return
    out.print(table("device facts", ["fact", "type", "meaning"], (
        (f.name, f.type.value, f.description + (f" ({', '.join(sorted(f.values))})" if f.values else ""))
        for f in FACTS.values())))
    out.print("functions: " + "; ".join(f"{n}: {d}" for n, d in FUNCTIONS.items()))


@app.command()
def controls(policy: PolicyOpt = None, json_out: JsonOpt = False) -> None:
    """Which ETSI EN 303 645, NIST IR 8259A and IEC 62443-4-2 controls the policy covers, and which not."""
    loaded = load_policy(policy)
    cov = coverage(loaded)
    if json_out:
        print_json({c.value: {"covered": covered, "not_covered": missing} for c, (covered, missing) in cov.items()})
        return
    for catalog, (covered, missing) in cov.items():
        total = len(covered) + len(missing)
        out.print(table(f"{catalog.value}: {len(covered)} of {total} covered", ["covered", "not covered"],
                        [(", ".join(covered) or "—", ", ".join(missing) or "—")]))


@app.command()
def publish(file: Annotated[Path, typer.Argument(help="Policy file (YAML) to publish to the partners.")]) -> None:
    """Publish an immutable, numbered version; it is in force until the next one."""
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None
    published = policies.publish(CTX.platform.uow, CTX.caller, text, str(file))
    out.print(f"published [bold]{published.name}[/] as version {published.number} "
              f"({len(published.policy.rules)} rules, sha256 {published.sha256[:12]}…)")


@app.command()
def ack(version: Annotated[int | None, typer.Option(help="Version (default: the one in force).")] = None) -> None:
    """Acknowledge a published policy for your organization."""
    number = policies.acknowledge(CTX.platform.uow, CTX.caller, version)
    out.print(f"{CTX.caller.org_name} acknowledged policy version {number}")


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """The version in force and the partners that have not acknowledged it."""
    current = policies.in_force(CTX.platform.uow)
    if current is None:
        raise InvalidInput("no policy is published yet", hint="cityward policy publish policies/baseline.yaml")
    missing = policies.unacknowledged(CTX.platform.uow, current.number)
    if json_out:
        print_json({"version": current.number, "name": current.name, "published_at": current.published_at,
                    "not_acknowledged": missing})
        return
    out.print(f"in force: [bold]{current.name}[/] version {current.number}, published "
              f"{current.published_at:%Y-%m-%d} by {current.published_by}")
    out.print(table("not acknowledged", ["organization"], ((m,) for m in missing)) if missing
              else "[green]every partner acknowledged it[/]")


waivers_app = typer.Typer(help="Exceptions to a rule, approved by someone else, until they expire.",
                          no_args_is_help=True)


@waivers_app.command("request")
def waiver_request(
    rule: Annotated[str, typer.Argument(help="Rule id, e.g. SVC-004.")],
    reason: Annotated[str, typer.Option(help="Why the exception is acceptable.")],
    expires: Annotated[str, typer.Option(help="How long it lasts, e.g. 30d.")],
    device: Annotated[str | None, typer.Option(help="One device.")] = None,
    zone: Annotated[str | None, typer.Option(help="A zone (and the zones inside it).")] = None,
    kind: Annotated[str | None, typer.Option(help="A device kind.")] = None,
    product: Annotated[str | None, typer.Option(help="'Brand Model' as labeled.")] = None,
    tag: Annotated[str | None, typer.Option(help="Devices with this tag.")] = None,
) -> None:
    """Ask for a waiver; it applies once a city administrator other than you approves it."""
    chosen = {k: v for k, v in {"device": device, "zone": zone, "kind": kind, "product": product,
                                "tag": tag}.items() if v}
    until = datetime.now(UTC) + parse_age(expires)
    view = policies.request_waiver(CTX.platform.uow, CTX.caller, rule, chosen, reason, until)
    out.print(f"waiver {view.id} requested for {rule} on {chosen}; expires {view.expires_at:%Y-%m-%d %H:%M}")


@waivers_app.command("approve")
def waiver_approve(waiver_id: int) -> None:
    """Approve a requested waiver (city administrators; not the requester)."""
    view = policies.decide_waiver(CTX.platform.uow, CTX.caller, waiver_id, approve=True)
    out.print(f"waiver {view.id} approved")


@waivers_app.command("reject")
def waiver_reject(waiver_id: int) -> None:
    """Reject a requested waiver."""
    policies.decide_waiver(CTX.platform.uow, CTX.caller, waiver_id, approve=False)
    out.print(f"waiver {waiver_id} rejected")


@waivers_app.command("list")
def waiver_list(json_out: JsonOpt = False) -> None:
    """Waivers you may see, with their state."""
    items = policies.list_waivers(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json(items)
        return
    now = datetime.now(UTC)
    out.print(table("waivers", ["id", "rule", "applies to", "status", "expires", "requested by", "reason"], (
        (w.id, w.rule_id, ", ".join(f"{k}={v}" for k, v in w.selector.items()),
         "expired" if w.status == "approved" and _aware(w.expires_at) <= now else w.status,
         f"{w.expires_at:%Y-%m-%d}", w.requested_by, w.reason) for w in items)))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
