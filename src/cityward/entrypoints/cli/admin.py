"""`cityward orgs|zones|products|tokens|users|auditlog …`: the installation's partners and records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cityward.adapters.inventory_files import FileFormat
from cityward.domain.tokens import parse_duration
from cityward.domain.zones import MaintenanceWindow
from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.render import err, out, print_json, table
from cityward.errors import InvalidInput
from cityward.services import auditlog, catalog, organizations, tokens, users, zones

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

orgs_app = typer.Typer(help="Organizations: the city and its partners.", no_args_is_help=True)
zones_app = typer.Typer(help="Zones and who is responsible for what in them.", no_args_is_help=True)
products_app = typer.Typer(help="The product catalog and true (OEM/ODM) origin.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)
users_app = typer.Typer(help="People who sign in to the dashboard (passwords hashed with argon2id).",
                        no_args_is_help=True)
auditlog_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@orgs_app.command("list")
def orgs_list(kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
              json_out: JsonOpt = False) -> None:
    """Organizations you can see."""
    found = organizations.list_orgs(CTX.platform.uow, CTX.caller, kind)
    if json_out:
        print_json(found)
        return
    out.print(table("organizations", ["name", "kind", "brand", "contact"],
                    ((o.name, o.kind, o.brand, o.contact_email) for o in found)))


@orgs_app.command("contact")
def orgs_contact(
    name: str,
    webhook: Annotated[str | None, typer.Option(help="HTTPS endpoint for signed vulnerability notifications.")] = None,
    email: Annotated[str | None, typer.Option(help="Address for vulnerability notifications.")] = None,
    rotate_secret: Annotated[bool, typer.Option("--rotate-secret", help="A new webhook signing secret.")] = False,
) -> None:
    """Where an organization hears about vulnerabilities (city admin, or the organization's admin).
    A new webhook gets a signing secret, printed once: receivers verify X-Cityward-Signature with it."""
    from cityward.entrypoints.cli.fleet import secret_box
    from cityward.services import notifications

    contact, secret = notifications.set_contact(CTX.platform.uow, CTX.caller, secret_box(CTX.platform), name,
                                                webhook_url=webhook, email=email, rotate_secret=rotate_secret)
    out.print(f"{contact.organization}: webhook {contact.webhook_url or '-'}, e-mail {contact.email or '-'}")
    if secret:
        out.print(f"webhook signing secret (shown once; HMAC-SHA256, header X-Cityward-Signature):\n{secret}")


@orgs_app.command("add")
def orgs_add(
    name: str,
    kind: Annotated[str, typer.Option(
        help="integrator, installer, distributor, consultant, manufacturer, researcher.")],
    brand: Annotated[str | None, typer.Option(
        help="For a manufacturer: the brand it makes (default: its name).")] = None,
    email: Annotated[str | None, typer.Option(help="Contact e-mail for notifications.")] = None,
) -> None:
    """Add a partner organization (city admin)."""
    org = organizations.create_org(CTX.platform.uow, CTX.caller, name, kind, brand=brand,
                                   contact_email=email)
    out.print(f"added {org.kind} [bold]{org.name}[/]")


@orgs_app.command("import")
def orgs_import(
    file: Path,
    fmt: Annotated[str | None, typer.Option("--format", help="csv or json (default: from the name).")] = None,
) -> None:
    """Add the organizations a file lists (columns name, kind, brand, contact_email), each with the
    kind it states; all or nothing (city admin). Run it before `devices import` names them."""
    try:
        stream = file.open("rb")
    except OSError as exc:
        raise InvalidInput(f"{file}: {exc.strerror or 'cannot be read'}") from None
    with stream:
        done = organizations.import_orgs(CTX.platform.uow, CTX.caller, stream, str(file),
                                         FileFormat.from_name(str(file), fmt))
    out.print(f"added {len(done.created)} organizations from {file} ({len(done.unchanged)} already there)",
              markup=False)


@orgs_app.command("set-kind")
def orgs_set_kind(
    name: str,
    kind: Annotated[str, typer.Argument(
        help="integrator, installer, distributor, consultant, manufacturer, researcher.")],
) -> None:
    """State a partner's kind, or confirm the one an earlier version's import guessed (city admin;
    audited; `cityward doctor` lists the guesses)."""
    org = organizations.set_org_kind(CTX.platform.uow, CTX.caller, name, kind)
    out.print(f"{org.name} is {org.kind}", markup=False)


@orgs_app.command("rename")
def orgs_rename(name: str, new_name: str) -> None:
    """Rename an organization (city admin; audited), e.g. one `cityward doctor` reports as a clash."""
    org = organizations.rename_org(CTX.platform.uow, CTX.caller, name, new_name)
    out.print(f"renamed {name} → {org.name}", markup=False)


@zones_app.command("list")
def zones_list(json_out: JsonOpt = False) -> None:
    """Zones with criticality, parent, own duty assignments and device counts."""
    found = zones.list_zones(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json(found)
        return
    out.print(table("zones", ["name", "criticality", "parent", "duties", "devices", "window"], (
        (z.name, z.criticality, z.parent,
         "; ".join(f"{d}: {o}" for d, o in sorted(z.responsibilities.items())), f"{z.devices:,}",
         f"{z.maintenance_window['cron']} +{z.maintenance_window['duration_minutes']}m "
         f"{z.maintenance_window['timezone']}" if z.maintenance_window else "")
        for z in found)))


@zones_app.command("add")
def zones_add(
    name: str,
    criticality: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    parent: Annotated[str | None, typer.Option(help="The zone this one lies in.")] = None,
    window: Annotated[str | None, typer.Option(help="Maintenance window cron, e.g. '0 2 * * *'.")] = None,
    window_minutes: Annotated[int, typer.Option(help="Window length in minutes.")] = 240,
    timezone: Annotated[str, typer.Option(help="Window time zone, e.g. Europe/Brussels.")] = "UTC",
) -> None:
    """Add a zone (city admin)."""
    mw = MaintenanceWindow(window, window_minutes, timezone) if window else None
    z = zones.create_zone(CTX.platform.uow, CTX.caller, name, criticality, parent, mw)
    out.print(f"added zone [bold]{z.name}[/] ({z.criticality})")


@zones_app.command("assign")
def zones_assign(
    zone: str,
    duty: Annotated[str, typer.Option(help="supply, install, maintain, credentials or remote_access.")],
    org: Annotated[str | None, typer.Option(help="Responsible organization; omit to unassign.")] = None,
) -> None:
    """Make an organization responsible for a duty in a zone and the zones inside it."""
    zones.assign_duty(CTX.platform.uow, CTX.caller, zone, duty, org)
    out.print(f"{zone}: {duty} → {org or 'nobody'}")


@zones_app.command("rename")
def zones_rename(name: str, new_name: str) -> None:
    """Rename a zone (city admin; audited), e.g. one `cityward doctor` reports as a clash."""
    z = zones.rename_zone(CTX.platform.uow, CTX.caller, name, new_name)
    out.print(f"renamed zone {name} → {z.name}", markup=False)


@products_app.command("list")
def products_list(
    manufacturer: Annotated[str | None, typer.Option(help="True manufacturer.")] = None,
    origin: Annotated[str | None, typer.Option(help="unknown, original or relabeled.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Catalog entries with their origin chain and device counts in your scope."""
    found = catalog.list_products(CTX.platform.uow, CTX.caller, manufacturer=manufacturer,
                                  origin_status=origin)
    if json_out:
        print_json(found)
        return
    out.print(table("products", ["brand", "model", "kind", "origin", "true manufacturer",
                                 "chain", "end of support", "min firmware", "upgrade min", "devices"], (
        (p.brand, p.model, p.kind, p.origin_status, f"{p.manufacturer} {p.origin_model}",
         " → ".join(p.chain), p.end_of_support, p.min_firmware,
         f"{p.upgrade_minutes:g}" if p.upgrade_minutes is not None else None, f"{p.devices:,}") for p in found)))


@products_app.command("show")
def products_show(brand: str, model: str, json_out: JsonOpt = False) -> None:
    """One product and the relabel chain to its true manufacturer."""
    p = catalog.get_product(CTX.platform.uow, CTX.caller, (brand, model))
    if json_out:
        print_json(p)
        return
    out.print(table(f"{p.brand} {p.model}", ["field", "value"], [
        ("kind", p.kind), ("origin", p.origin_status), ("chain", " → ".join(p.chain)),
        ("true manufacturer", f"{p.manufacturer} {p.origin_model}"),
        ("end of support", p.end_of_support), ("minimum firmware", p.min_firmware),
        ("version scheme", p.version_scheme),
        ("upgrade minutes", f"{p.upgrade_minutes:g}" if p.upgrade_minutes is not None else None),
        ("devices", p.devices)]))


@products_app.command("set")
def products_set(
    brand: str, model: str,
    kind: Annotated[str | None, typer.Option()] = None,
    origin_brand: Annotated[str | None, typer.Option(help="Made by: brand of the origin product.")] = None,
    origin_model: Annotated[str | None, typer.Option(help="Made by: model of the origin product.")] = None,
    original: Annotated[bool, typer.Option("--original", help="The labeled brand is the manufacturer.")] = False,
    end_of_support: Annotated[str | None, typer.Option(help="YYYY-MM-DD.")] = None,
    min_firmware: Annotated[str | None, typer.Option()] = None,
    version_scheme: Annotated[str | None, typer.Option(help="semver, dotted or vendor.")] = None,
    upgrade_minutes: Annotated[str | None, typer.Option(
        help="Minutes a firmware upgrade takes (download, flash, reboot): rollouts wait this long.")] = None,
) -> None:
    """Create or update a product; declare its origin with --origin-brand/--origin-model."""
    if original:
        origin_brand, origin_model = brand, model
    p = catalog.save_product(CTX.platform.uow, CTX.caller, {
        "brand": brand, "model": model, "kind": kind, "origin_brand": origin_brand,
        "origin_model": origin_model, "end_of_support": end_of_support,
        "min_firmware": min_firmware, "version_scheme": version_scheme, "upgrade_minutes": upgrade_minutes})
    out.print(f"{p.brand} {p.model}: {p.origin_status}, made by {p.manufacturer} {p.origin_model}")


@products_app.command("import")
def products_import(file: Path, fmt: Annotated[str | None, typer.Option("--format", "-f")] = None) -> None:
    """Import a catalog file (brand, model, kind, origin_brand, origin_model, …); all-or-nothing."""
    if not file.is_file():
        raise InvalidInput(f"{file}: no such file")
    with file.open("rb") as fh:
        n = catalog.import_catalog(CTX.platform.uow, CTX.caller, fh, str(file),
                                   FileFormat.from_name(str(file), fmt))
    out.print(f"imported {n} products from {file}")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'ops laptop'.")],
    org: Annotated[str | None, typer.Option(help="Organization (default: your own).")] = None,
    role: Annotated[str, typer.Option(help="admin, operator or viewer.")] = "viewer",
    expires: Annotated[str | None, typer.Option(
        help="Lifetime, e.g. 30d, 12h, 2w (default 90d; a partner's at most 365d).")] = None,
    no_expiry: Annotated[bool, typer.Option(
        "--no-expiry", help="Never expires (a city admin only; recorded in the audit log).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create an API token; its secret is printed once and stored only as a hash."""
    issued = tokens.create_token(CTX.platform.uow, CTX.caller, org or CTX.caller.org_name, name, role,
                                 parse_duration(expires) if expires is not None else None, no_expiry=no_expiry)
    if json_out:
        print_json({"token": issued.secret, **vars(issued.view)})
        return
    until = f"expires {issued.view.expires_at:%Y-%m-%d %H:%M} UTC" if issued.view.expires_at else "never expires"
    out.print(f"token [bold]{issued.view.id}[/] for {issued.view.org} ({issued.view.role}), {until}:")
    out.print(issued.secret, markup=False)
    err.print("[yellow]Store it now: it is not shown again.[/]")


def _expires(t: tokens.TokenView) -> str:
    if t.expires_at is None:
        return "never"
    return f"{'expired ' if t.expired else ''}{t.expires_at:%Y-%m-%d %H:%M}"


@tokens_app.command("list")
def tokens_list(json_out: JsonOpt = False) -> None:
    """Tokens you manage (never their secrets), with when each expires ('expired' once it has)."""
    found = tokens.list_tokens(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json(found)
        return
    out.print(table("tokens", ["id", "org", "name", "role", "created", "expires (UTC)", "revoked", "last used"], (
        (t.id, t.org, t.name, t.role, f"{t.created_at:%Y-%m-%d}", _expires(t),
         t.revoked_at and f"{t.revoked_at:%Y-%m-%d}", t.last_used_at and f"{t.last_used_at:%Y-%m-%d %H:%M}")
        for t in found)))


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token at once."""
    t = tokens.revoke_token(CTX.platform.uow, CTX.caller, token_id)
    out.print(f"revoked token {t.id} ({t.name}) of {t.org}")


PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input instead of generating one.")]


def _stdin_password(use: bool) -> str | None:
    if not use:
        return None
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput("--password-stdin: standard input is empty", hint="pipe the password in, one line")
    return line.rstrip("\r\n")


def _show_password(created: users.NewPassword, json_out: bool) -> None:
    if json_out:
        print_json({"password": created.password, **vars(created.user)})
        return
    if created.password is None:
        out.print(f"user [bold]{created.user.username}[/] of {created.user.org} ({created.user.role}): password set")
        return
    out.print(f"user [bold]{created.user.username}[/] of {created.user.org} ({created.user.role}), password:")
    out.print(created.password, markup=False)
    err.print("[yellow]Hand it over now: it is not shown again.[/]")


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Lower-case letters, digits and . _ @ - (3 to 100).")],
    org: Annotated[str | None, typer.Option(help="Organization (default: your own).")] = None,
    role: Annotated[str, typer.Option(help="admin, operator or viewer.")] = "viewer",
    password_stdin: PasswordStdin = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a dashboard user; without --password-stdin a password is generated and printed once."""
    created = users.create_user(CTX.platform.uow, CTX.caller, username, org or CTX.caller.org_name, role,
                                _stdin_password(password_stdin))
    _show_password(created, json_out)


@users_app.command("passwd")
def users_passwd(username: str, password_stdin: PasswordStdin = False, json_out: JsonOpt = False) -> None:
    """Set a new password (generated unless --password-stdin); ends the user's sessions and lockout."""
    _show_password(users.set_password(CTX.platform.uow, CTX.caller, username, _stdin_password(password_stdin)),
                   json_out)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Stop a user signing in; its sessions end at once."""
    u = users.disable_user(CTX.platform.uow, CTX.caller, username)
    out.print(f"disabled user {u.username} of {u.org}")


@users_app.command("list")
def users_list(json_out: JsonOpt = False) -> None:
    """Users you manage (never their passwords)."""
    found = users.list_users(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json(found)
        return
    out.print(table("users", ["username", "org", "role", "created", "disabled", "locked until", "last sign-in"], (
        (u.username, u.org, u.role, f"{u.created_at:%Y-%m-%d}", "yes" if u.disabled else "",
         u.locked_until and f"{u.locked_until:%Y-%m-%d %H:%M}",
         u.last_sign_in_at and f"{u.last_sign_in_at:%Y-%m-%d %H:%M}")
        for u in found)))


@auditlog_app.command("verify")
def auditlog_verify(
    expect_head: Annotated[str | None, typer.Option(help="Head hash recorded earlier: detects a cut-off tail.")] = None,
    anchors_file: Annotated[Path | None, typer.Option(
        "--anchors", help="Verify against this copy of the anchors file (a partner's) instead of the installation's "
        "own (CITYWARD_AUDIT_ANCHOR_FILE).", dir_okay=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the hash chain and its latest signed anchor: name the first event that was edited, deleted
    or reordered, and detect a cut-off tail or a rewrite (hashes recomputed) since the anchor."""
    from cityward.services import auditanchors

    settings = CTX.platform.settings
    public = auditanchors.signing_key(settings.secret_key_bytes()).public_key()
    path = anchors_file or settings.audit_anchor_file
    report, check = auditanchors.verify(CTX.platform.uow, CTX.caller, public, path, own=anchors_file is None)
    # The chain verified, so an expected head that is gone was cut off with the tail.
    head_gone = bool(report.ok and expect_head
                     and not auditlog.chain_contains(CTX.platform.uow, CTX.caller, expect_head))
    if json_out:
        print_json({"ok": report.ok and check.ok and not head_gone, "events": report.events, "head": report.head,
                    "first_broken": report.first_broken, "reason": report.reason, "anchor": check.as_dict(),
                    **({"expected_head_found": not head_gone} if expect_head else {})})
    elif not report.ok:
        err.print(f"[bold red]audit log broken[/] at event {report.first_broken}: {report.reason}")
    elif not check.ok:
        err.print(f"[bold red]audit log fails its anchor[/] ({escape(check.source)}): {escape(check.reason or '')}")
    else:
        out.print(f"[green]audit log intact[/]: {report.events:,} events, head {report.head}")
        if check.status == "ok" and check.anchor is not None:
            out.print(f"[green]matches its anchor[/] of {check.anchor.fields()['at']} (event {check.anchor.seq:,}, "
                      f"{escape(check.source)} line {check.line})")
        else:
            out.print(f"[dim]{escape(check.reason or '')}; keep copies of the anchors elsewhere "
                      "(partners receive them)[/]")
    if head_gone and not json_out:
        err.print(f"[bold red]the anchored head {expect_head} is no longer in the log[/]: "
                  "events were cut off or the log was rewritten")
    if not report.ok or not check.ok or head_gone:
        raise typer.Exit(1)


@auditlog_app.command("anchor")
def auditlog_anchor(json_out: JsonOpt = False) -> None:
    """Verify the chain, then sign its head with the city's anchor key and append the anchor to the
    anchors file (CITYWARD_AUDIT_ANCHOR_FILE), outside the database; organizations named in
    CITYWARD_AUDIT_ANCHOR_RECIPIENTS are sent it over their contact. `cityward serve` anchors daily."""
    from cityward.entrypoints.cli.fleet import secret_box
    from cityward.services import auditanchors, notifications

    settings = CTX.platform.settings
    smtp = notifications.smtp_settings(settings.smtp_url.get_secret_value() if settings.smtp_url else None,
                                       settings.smtp_sender) if settings.audit_anchor_recipients else None
    done = auditanchors.anchor(
        CTX.platform.uow, CTX.caller, auditanchors.signing_key(settings.secret_key_bytes()),
        settings.audit_anchor_file, recipients=settings.audit_anchor_recipients, box=secret_box(CTX.platform),
        smtp=smtp, allow_private=settings.notify_private_networks)
    failed = [s for s in done.sent if not s.ok and not s.skipped]
    if json_out:
        print_json({"anchor": done.anchor.fields(), "file": str(done.file), "sent": done.sent})
    else:
        out.print(f"[green]anchored[/] the audit log at event {done.anchor.seq:,} (head {done.anchor.head}), "
                  f"signed with key {done.anchor.key}, in {escape(str(done.file))}")
        if done.sent:
            out.print(table("anchor sent to", ["organization", "channel", "to", "result"], (
                (s.organization, s.channel, s.target, "delivered" if s.ok else s.detail or "failed")
                for s in done.sent)))
    if failed:
        err.print(f"{len(failed)} deliveries failed; the anchor is written, and the next one reaches them")
        raise typer.Exit(1)


@auditlog_app.command("anchor-key")
def auditlog_anchor_key(json_out: JsonOpt = False) -> None:
    """The city's public anchor key (Ed25519, PEM), for partners who check anchors themselves. The
    private key is derived from CITYWARD_SECRET_KEY and never stored or shown."""
    from cityward.domain import auditanchors as anchors
    from cityward.services import auditanchors

    public = auditanchors.signing_key(CTX.platform.settings.secret_key_bytes()).public_key()
    if json_out:
        print_json({"key": anchors.key_id(public), "public_key": anchors.public_pem(public)})
        return
    out.print(f"anchor key {anchors.key_id(public)} (Ed25519):")
    out.print(anchors.public_pem(public).rstrip(), markup=False)


@auditlog_app.command("list")
def auditlog_list(
    action: Annotated[str | None, typer.Option(help="e.g. devices.imported")] = None,
    target: Annotated[str | None, typer.Option(help="Target id.")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Newest events first."""
    events = auditlog.list_events(CTX.platform.uow, CTX.caller, action=action, target=target, limit=limit)
    if json_out:
        print_json(events)
        return
    out.print(table("audit log", ["#", "at", "actor", "action", "target"], (
        (e.seq, f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, f"{e.target_type} {e.target_id}")
        for e in events)))
