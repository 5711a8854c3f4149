"""`cityward advisories …` and `cityward vulns …`: vulnerability intelligence matched to the fleet."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.devices import JsonOpt
from cityward.entrypoints.cli.render import err, out, print_json, table
from cityward.services import advisories, sboms, vulnerabilities
from cityward.services.vulnerabilities import MatchSummary

advisories_app = typer.Typer(help="Import CSAF advisories, CVE records, the CISA KEV catalog and EPSS scores; match "
                                  "them to the fleet.", no_args_is_help=True)
sbom_app = typer.Typer(help="CycloneDX SBOMs of firmware releases: components matched to advisories.",
                       no_args_is_help=True)
vulns_app = typer.Typer(help="What each vulnerability affects, most urgent first, per responsible organization.",
                        no_args_is_help=True)
_LABEL_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "green"}


def _summary(s: MatchSummary) -> Table:
    t = table("fleet matched", ["CVEs", "classes (product, firmware)", "affected (class, CVE)", "devices affected",
                                "(device, CVE) matches", "in KEV", "stored: new / changed / gone", "seconds"], [(
        f"{s.cves:,}", f"{s.classes:,}", f"{s.affected_classes:,}", f"{s.devices:,}", f"{s.matches:,}",
        f"{s.kev:,}", f"{s.inserted:,} / {s.updated:,} / {s.deleted:,}", f"{s.seconds:.2f}")])
    return t


@advisories_app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="A file (JSON, CSV, .gz), a directory, a .zip, or an http(s) URL.")],
    kind: Annotated[str, typer.Option(help="auto, csaf, cve5, kev or epss.")] = "auto",
    skip_refused: Annotated[bool, typer.Option(
        "--skip-refused", help="Import the valid documents even if others are refused.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Import advisories and feeds, then re-match the fleet for what they touch."""
    with out.status(f"reading {source}…"):
        report = advisories.import_advisories(CTX.platform.uow, CTX.caller, source, kind=kind,
                                              skip_refused=skip_refused)
    with out.status("matching the fleet…"):
        summary = advisories.rematch(CTX.platform.uow, CTX.caller, report)
    if json_out:
        print_json({"imported": report.imported, "replaced": report.replaced, "unchanged": report.unchanged,
                    "older": report.older, "refused": [str(p) for p in report.refused],
                    "unparsed": [str(p) for p in report.unparsed], "kev": report.kev, "epss": report.epss,
                    "match": summary.__dict__ if summary else None})
        return
    rows = [(a["id"], a["revision"], "new", f"{a['entries']:,}", ", ".join(a["cves"][:4])) for a in report.imported]
    rows += [(a["id"], a["revision"], f"replaces {a['change']['from_revision']} "
              f"(+{a['change']['added']} -{a['change']['removed']} statements)", f"{a['entries']:,}",
              ", ".join(a["cves"][:4])) for a in report.replaced]
    rows += [(d, "", "unchanged", "", "") for d in report.unchanged]
    rows += [(d, "", "older than the stored revision: ignored", "", "") for d in report.older]
    if rows:
        out.print(table("advisories", ["id", "revision", "", "statements", "CVEs"], rows))
    if report.kev is not None:
        out.print(f"CISA KEV: {report.kev:,} known exploited vulnerabilities")
    if report.epss is not None:
        out.print(f"EPSS: {report.epss:,} scores")
    for p in report.refused:
        err.print(f"[red]refused[/]: {p}")
    if report.unparsed:
        err.print(f"[yellow]{len(report.unparsed)} statement(s) could not be normalized and were left out[/] "
                  "(not guessed):")
        for p in report.unparsed[:20]:
            err.print(f"  {p}")
    if summary:
        out.print(_summary(summary))
    if report.imported or report.replaced:
        from cityward.services import vendors

        missing = vendors.unmatched(CTX.platform.uow, CTX.caller)
        if missing.unmatched:
            err.print(f"[yellow]{missing.statements:,} statement(s) about {len(missing.unmatched):,} product(s) name "
                      "nothing in your catalog[/]: see `cityward advisories unmatched`")


@advisories_app.command("unmatched")
def unmatched_(
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Products listed.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Statements that can match no device: what they name, why, and the nearest catalog names."""
    from cityward.services import vendors

    report = vendors.unmatched(CTX.platform.uow, CTX.caller, limit=limit)
    if json_out:
        print_json({"unmatched": [{"vendor": u.vendor, "product": u.product, "statements": u.statements,
                                   "cves": sorted(u.cves), "advisories": sorted(u.advisories), "reason": u.reason,
                                   "suggestions": u.suggestions} for u in report.unmatched],
                    "unreadable": [dataclasses.asdict(u) for u in report.unreadable]})
        return
    if not report.unmatched and not report.unreadable:
        out.print("every stored statement names a product of your catalog")
        return
    if report.unmatched:
        out.print(table("statements that name no catalog product", [
            "vendor", "product", "statements", "CVEs", "why", "what would make it match"], (
                (u.vendor or "—", u.product or "—", u.statements, ", ".join(sorted(u.cves)[:3])
                 + (f" (+{len(u.cves) - 3})" if len(u.cves) > 3 else ""), u.reason, "; ".join(u.suggestions))
                for u in report.unmatched)))
    if report.unreadable:
        out.print(table("statements that could not be read (left out, not guessed)", ["advisory", "problem", "where"],
                        ((u.advisory, u.message, u.where or "") for u in report.unreadable[:limit])))


@advisories_app.command("match")
def match_(json_out: JsonOpt = False) -> None:
    """Match every advisory against the whole fleet (imports re-match what they touch by themselves)."""
    with out.status("matching the fleet…"):
        summary = vulnerabilities.match(CTX.platform.uow, caller=CTX.caller)
    if json_out:
        print_json(summary.__dict__)
        return
    out.print(_summary(summary))


@vulns_app.command("list")
def list_(
    cve: Annotated[str | None, typer.Option(help="Only this CVE.")] = None,
    org: Annotated[str | None, typer.Option(help="Only devices this organization maintains.")] = None,
    kev: Annotated[bool, typer.Option("--kev", help="Only known exploited vulnerabilities (CISA KEV).")] = False,
    label: Annotated[str | None, typer.Option(help="critical, high, medium or low.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Affected devices grouped by CVE, product, firmware and maintaining organization, most urgent first."""
    items = vulnerabilities.exposures(CTX.platform.uow, CTX.caller, cve=cve, organization=org, kev_only=kev,
                                      label=label, limit=limit)
    if json_out:
        print_json(items)
        return
    if not items:
        out.print("no affected devices in your scope (import advisories with `cityward advisories import`)")
        return
    out.print(table("vulnerabilities in the fleet, most urgent first", [
        "priority", "CVE", "KEV", "EPSS", "CVSS", "due", "product", "firmware", "devices", "maintainer", "fix",
        "advisory"], ((
            Text(f"{e.label} {e.priority:.0f}", style=_LABEL_STYLE.get(e.label, "")), e.cve,
            "yes" + (" (ransomware)" if e.ransomware else "") if e.kev else "",
            f"{e.epss:.2f}" if e.epss is not None else "", f"{e.cvss:.1f}" if e.cvss is not None else "",
            str(e.due), e.product + (" (via origin)" if e.via == "origin" else ""), e.firmware, f"{e.devices:,}",
            e.organization or "—", e.fixed_version or e.remediation or "", e.advisory) for e in items)))


@sbom_app.command("import")
def sbom_import(
    path: Annotated[Path, typer.Argument(help="A CycloneDX SBOM (1.4 to 1.6, JSON or XML).")],
    release: Annotated[int, typer.Option(help="The firmware release it describes (cityward firmware list).",
                                         min=1, max=2**31 - 1)],
    json_out: JsonOpt = False,
) -> None:
    """Attach a firmware image's SBOM, then re-match the CVEs that name its components."""
    result = sboms.import_sbom(CTX.platform.uow, CTX.caller, path, release)
    summary = vulnerabilities.match(CTX.platform.uow, cves=result.cves, caller=CTX.caller) if result.cves else None
    if json_out:
        print_json({**dataclasses.asdict(result), "match": summary.__dict__ if summary else None})
        return
    out.print(f"SBOM (CycloneDX {result.spec_version}) attached to {result.product} {result.version}: "
              f"{result.components:,} components" + (f" ({result.duplicates:,} duplicates dropped)"
                                                      if result.duplicates else "")
              + f", {result.vex_not_affected} not-affected statements")
    if summary:
        out.print(_summary(summary))


@vulns_app.command("notify")
def notify_(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Tell each maintaining organization what affects its devices, and each manufacturer how many
    of its deployed units are affected (signed webhooks, e-mail); news already delivered is skipped."""
    from cityward.entrypoints.cli.fleet import secret_box
    from cityward.services import notifications

    settings = CTX.platform.settings
    smtp = notifications.smtp_settings(settings.smtp_url.get_secret_value() if settings.smtp_url else None,
                                       settings.smtp_sender)
    with out.status("sending notifications…"):
        sent = notifications.send(CTX.platform.uow, CTX.caller, secret_box(CTX.platform), smtp, dry_run=dry_run,
                                  allow_private=settings.notify_private_networks)
    if json_out:
        print_json(sent)
        return
    out.print(table("notifications", ["organization", "about", "channel", "to", "result"], (
        (s.organization, s.kind.split(".")[-1].replace("_", " "), s.channel, s.target,
         "already delivered" if s.skipped else "delivered" if s.ok else s.detail or "failed") for s in sent)))
    failed = [s for s in sent if not s.ok and not s.skipped and s.channel != "none" and not dry_run]
    if failed:
        err.print(f"{len(failed)} deliveries failed; they are sent again next time")
        raise typer.Exit(1)
