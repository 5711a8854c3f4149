"""The `cityward` command: one Typer app; errors become messages and exit codes here only."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from cityward import __version__
from cityward.entrypoints.cli import admin, audit, devices, doctor, fleet, policy, rollout, vulns
from cityward.entrypoints.cli.context import CTX, _user
from cityward.entrypoints.cli.render import EXIT_FAILED, err, exit_code, out, show_error
from cityward.errors import CitywardError
from cityward.services import setup
from cityward.sim.cli import sim_app

app = typer.Typer(
    name="cityward",
    help="Keep a smart city's connected devices secure, together.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(devices.app, name="devices")
app.add_typer(admin.products_app, name="products")
app.add_typer(admin.zones_app, name="zones")
app.add_typer(admin.orgs_app, name="orgs")
app.add_typer(admin.tokens_app, name="tokens")
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.auditlog_app, name="auditlog")
app.add_typer(fleet.mqtt_app, name="mqtt")
app.add_typer(fleet.credentials_app, name="credentials")
app.add_typer(fleet.discover_app, name="discover")
app.add_typer(policy.app, name="policy")
app.add_typer(policy.waivers_app, name="waivers")
app.add_typer(audit.app, name="audit")
app.add_typer(rollout.firmware_app, name="firmware")
app.add_typer(rollout.app, name="rollout")
app.command("worker")(rollout.worker)
app.add_typer(rollout.config_app, name="config")
app.add_typer(vulns.advisories_app, name="advisories")
app.add_typer(vulns.vulns_app, name="vulns")
app.add_typer(vulns.sbom_app, name="sbom")
app.command()(fleet.connect)
app.command()(doctor.doctor)
app.add_typer(sim_app, name="sim", help="The simulated city: thousands of devices speaking the protocol (device side).")


def _version(value: bool) -> None:
    if value:
        out.print(f"cityward {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version.")] = False,
) -> None:
    """Configuration: CITYWARD_DATABASE_URL, CITYWARD_SECRET_KEY, CITYWARD_TOKEN or cityward.toml."""


@app.command()
def init(
    city: Annotated[str, typer.Option(help="The city's name.")],
    admin: Annotated[str, typer.Option(help="Username of the first dashboard administrator.")] = "admin",
) -> None:
    """Create the city organization, its first admin token and its first admin user (token and
    password printed once, stored hashed)."""
    inst = setup.initialize(CTX.platform.uow, city, f"local:{_user()}", admin)
    CTX.platform.settings.secret_key_bytes()  # create the key file now, with 0600
    out.print(f"initialized cityward for [bold]{inst.city}[/]")
    expires = inst.admin_token.view.expires_at
    # Like every token it expires (90 days): the CLI on this server acts as the city admin without
    # one, so a lapsed first token locks nobody out; `cityward tokens create` makes the next.
    out.print(f"first admin token, expires {expires:%Y-%m-%d} (store it now; it is not shown again):"
              if expires else "first admin token (store it now; it is not shown again):")
    out.print(inst.admin_token.secret, markup=False)
    if inst.admin_user is not None:
        out.print(f"dashboard sign-in: user [bold]{inst.admin_user.user.username}[/], password (shown once; "
                  f"change it with `cityward users passwd`):")
        out.print(inst.admin_user.password or "", markup=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    executor: Annotated[bool, typer.Option(
        "--executor/--no-executor", help="Carry out started rollouts in this process (the one-machine executor; "
        "--no-executor when `cityward worker` processes do the work).")] = True,
) -> None:
    """Serve the REST API (OpenAPI at /docs) and the web dashboard (sign in as a user); rollouts started
    there are carried out in this process unless --no-executor."""
    from cityward.entrypoints.cli.demo import serve_api

    settings = CTX.platform.settings
    serve_api(CTX.platform, host or settings.api_host, port or settings.api_port, executor=executor,
              mqtt_url=settings.mqtt_url)


@app.command()
def demo(
    devices_n: Annotated[int, typer.Option("--devices", help="Devices in the demo city.", min=100, max=200_000)] = 2000,
    once: Annotated[bool, typer.Option("--once", help="Exit after the summary instead of serving the API.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated city.")] = 7,
    port: Annotated[int | None, typer.Option(help="API port when serving.")] = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Bring the devices online through the "
                                       "simulated city (MQTT and HTTP).")] = True,
) -> None:
    """Build a demo city, import it, bring its devices online, audit it (table and HTML report), then serve
    the API."""
    from cityward.entrypoints.cli.demo import run_demo

    run_demo(CTX.platform, devices_n, seed=seed, serve=not once, port=port, live=live)


def main() -> None:
    try:
        app()
    except CitywardError as exc:
        show_error(exc)
        sys.exit(exit_code(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly; the traceback only on request
        if os.environ.get("CITYWARD_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}")
        err.print("[dim]run again with CITYWARD_DEBUG=1 for the traceback, and report it[/]")
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
