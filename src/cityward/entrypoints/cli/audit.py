"""`cityward audit run`: evaluate a policy over the fleet, store the run, show what changed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.columns import Columns

from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.render import err, json_text, out, print_json, table
from cityward.errors import InvalidInput
from cityward.services import policies

if TYPE_CHECKING:
    from cityward.services.audit import AuditReport

app = typer.Typer(help="Compliance audits of the fleet against a policy.", no_args_is_help=True)


def show_report(report: AuditReport, top: int = 10) -> None:
    out.print(f"[bold]{report.policy}[/] over {report.devices:,} devices · score [bold]{report.score}[/] · "
              f"{report.findings.height:,} findings ([red]{report.count('new'):,} new[/], "
              f"{report.count('persisting'):,} persisting, [green]{report.resolved.height:,} resolved[/], "
              f"{report.waived:,} waived)")
    if report.not_acknowledged:
        out.print(f"[yellow]not acknowledged version {report.version}:[/] {', '.join(report.not_acknowledged)}")
    out.print(table("top failing rules", ["rule", "severity", "devices", "title"], (
        (rid, sev, f"{n:,}", title) for rid, title, sev, n in report.by_rule[:top])))
    worst = {dim: items[:5] for dim, items in report.scores.items()}
    out.print(Columns([
        table(f"worst by {dim}", [dim, "score", "failing"], ((s.key, f"{s.score}", f"{s.failing:,}/{s.devices:,}")
                                                            for s in items))
        for dim, items in worst.items()]))


@app.command("run")
def run(
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Policy file (default: the published version in force, else the shipped baseline).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or html.")] = "table",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the report here instead of stdout.")] = None,
    fail_on: Annotated[str | None, typer.Option(help="Exit 1 if a finding has this severity or worse.")] = None,
) -> None:
    """Evaluate the policy over the devices you may see; store the run with its findings."""
    from cityward.entrypoints.reports import html  # polars and Jinja2 load only for an audit
    from cityward.services import audit

    if fmt not in ("table", "json", "html"):
        raise InvalidInput("--format must be table, json or html")
    threshold = audit.parse_fail_on(fail_on)
    uow = CTX.platform.uow
    chosen = policies.policy_to_audit(uow, policy)
    report = audit.run_audit(uow, CTX.caller, chosen.policy, chosen.text, version=chosen.version)
    if fmt == "html":
        target = out_file or Path(f"audit-{report.run_id}.html")
        history = audit.trend(uow, CTX.caller, report.policy)
        try:
            target.write_text(html.render(report, history, CTX.caller.org_name), encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot write {target}: {exc.strerror}") from None
        show_report(report)
        err.print(f"HTML report written to {target}")
    elif fmt == "json":
        data = {"run": report.run_id, "policy": report.policy, "at": report.at, "devices": report.devices,
                "score": report.score, "findings": report.finding_list(), "resolved": report.resolved_pairs(),
                "by_rule": report.by_rule, "scores": report.scores, "policy_version": report.version,
                "not_acknowledged": report.not_acknowledged}
        if out_file:
            out_file.write_text(json_text(data))
            err.print(f"report written to {out_file}")
        else:
            print_json(data)
    else:
        show_report(report)
    if threshold is not None and report.fails_at(threshold):
        raise typer.Exit(1)
