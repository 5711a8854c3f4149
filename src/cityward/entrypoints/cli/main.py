"""The `cityward` command: one Typer app; errors become messages and exit codes here only.

The command modules are imported only when their command runs: each pulls in the services and
their libraries (SQLAlchemy, polars, httpx, …), which cost seconds of CPU together, and
`cityward --version`, `cityward --help` or one read command need almost none of them. The root
group lists them from the table below without importing them.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from cityward import __version__
from cityward.entrypoints.cli.context import CTX, _user
from cityward.entrypoints.cli.render import err, out, print_problem, show_error
from cityward.errors import CitywardError, InvalidInput


class InternalError(CitywardError):
    """An exception no code meant to raise: a bug, reported without a traceback."""

    title = "Internal error"

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class Lazy:
    """A command of the root group, imported when it runs: `target` is `module:attribute`, a Typer
    sub-app or a command function; `extends` are modules that add commands to that sub-app."""

    target: str
    help: str  # what `cityward --help` lists: the sub-app's own help (a test keeps them equal)
    extends: tuple[str, ...] = ()

    def load(self, name: str) -> Any:
        for module in self.extends:
            importlib.import_module(module)
        module, _, attribute = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        if isinstance(obj, typer.Typer):  # a group, even with one command (`audit run` stays `audit run`)
            return typer.main.get_group(obj)
        single = typer.Typer()  # a function: a command of its own
        single.command(name)(obj)
        return typer.main.get_command(single)


_CLI = "cityward.entrypoints.cli"
LAZY: dict[str, Lazy] = {
    "devices": Lazy(f"{_CLI}.devices:app", "The device inventory: import, export, list and inspect devices.",
                    extends=(f"{_CLI}.fleet",)),  # `devices command` lives with the other device I/O
    "products": Lazy(f"{_CLI}.admin:products_app", "The product catalog and true (OEM/ODM) origin."),
    "zones": Lazy(f"{_CLI}.admin:zones_app", "Zones and who is responsible for what in them."),
    "orgs": Lazy(f"{_CLI}.admin:orgs_app", "Organizations: the city and its partners."),
    "tokens": Lazy(f"{_CLI}.admin:tokens_app", "API tokens (shown once, stored hashed)."),
    "users": Lazy(f"{_CLI}.admin:users_app",
                  "People who sign in to the dashboard (passwords hashed with argon2id)."),
    "auditlog": Lazy(f"{_CLI}.admin:auditlog_app", "The tamper-evident audit log."),
    "mqtt": Lazy(f"{_CLI}.fleet:mqtt_app", "The MQTT broker: per-device accounts and access control."),
    "credentials": Lazy(f"{_CLI}.fleet:credentials_app", "Device credentials, stored encrypted."),
    "discover": Lazy(f"{_CLI}.fleet:discover_app", "Devices not in the inventory: probe, review, approve or reject."),
    "connect": Lazy(f"{_CLI}.fleet:connect",
                    "Connect to the fleet: ingest MQTT state, poll HTTP devices, mark silent devices offline."),
    "policy": Lazy(f"{_CLI}.policy:app", "Security policy as code: validate, facts, controls."),
    "waivers": Lazy(f"{_CLI}.policy:waivers_app",
                    "Exceptions to a rule, approved by someone else, until they expire."),
    "audit": Lazy(f"{_CLI}.audit:app", "Compliance audits of the fleet against a policy."),
    "firmware": Lazy(f"{_CLI}.rollout:firmware_app", "The firmware catalog: manufacturers' keys and verified images."),
    "rollout": Lazy(f"{_CLI}.rollout:app",
                    "Bulk operations in waves: plan, create, approve, start, watch, pause, resume, abort."),
    "worker": Lazy(f"{_CLI}.rollout:worker",
                   "A scale-out worker: carries out rollouts with the others, through the PostgreSQL job queue."),
    "config": Lazy(f"{_CLI}.rollout:config_app", "Desired configuration per selector, and drift from it."),
    "advisories": Lazy(f"{_CLI}.vulns:advisories_app", "Import CSAF advisories, CVE records, the CISA KEV catalog "
                       "and EPSS scores; match them to the fleet."),
    "vulns": Lazy(f"{_CLI}.vulns:vulns_app",
                  "What each vulnerability affects, most urgent first, per responsible organization."),
    "vendors": Lazy(f"{_CLI}.vendors:app", "Vendor aliases: the names advisories use for the vendors in your catalog."),
    "sbom": Lazy(f"{_CLI}.vulns:sbom_app", "CycloneDX SBOMs of firmware releases: components matched to advisories."),
    "doctor": Lazy(f"{_CLI}.doctor:doctor", "Check the installation: guessed organization kinds, a second city, "
                   "names that clash in case (exit 1 if any)."),
    "sim": Lazy("cityward.sim.cli:sim_app",
                "The simulated city: thousands of devices speaking the cityward device protocol."),
}


class LazyGroup(TyperGroup):
    """The root group: commands defined here, then those of LAZY, each imported on first use."""

    _listing = False  # while help is being written, a lazy command is only its name and help line

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        spec = LAZY[cmd_name]
        if self._listing:
            return TyperCommand(cmd_name, help=spec.help)
        command = spec.load(cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="cityward",
    cls=LazyGroup,
    help="Keep a smart city's connected devices secure, together.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"cityward {__version__}", markup=False)
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
    from cityward.services import setup

    inst = setup.initialize(CTX.platform.uow, city, f"local:{_user()}", admin)
    CTX.platform.settings.secret_key_bytes()  # create the key file now, with 0600
    out.print(f"initialized cityward for [bold]{escape(inst.city)}[/]")
    expires = inst.admin_token.view.expires_at
    # Like every token it expires (90 days): the CLI on this server acts as the city admin without
    # one, so a lapsed first token locks nobody out; `cityward tokens create` makes the next.
    out.print(f"first admin token, expires {expires:%Y-%m-%d} (store it now; it is not shown again):"
              if expires else "first admin token (store it now; it is not shown again):")
    out.print(inst.admin_token.secret, markup=False)
    if inst.admin_user is not None:
        out.print(f"dashboard sign-in: user [bold]{escape(inst.admin_user.user.username)}[/], password (shown once; "
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

    CTX.require_platform("serve the API")
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


def wants_json(args: Sequence[str]) -> bool:
    """`--json` anywhere before a `--`: errors are then written as JSON problem objects too."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def os_error(exc: OSError) -> CitywardError:
    """A file or socket error no command translated, said as a person would (no errno text): a
    path that does not exist is the caller's mistake (exit 2), anything else a failure (exit 1)."""
    what = exc.strerror or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename is not None else ""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return InvalidInput(f"{where}{what}")
    return CitywardError(f"{where}{what}")


def _fail(exc: CitywardError, as_json: bool) -> NoReturn:
    if as_json:
        print_problem(exc)
    else:
        show_error(exc)
    sys.exit(exc.exit_code)


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    as_json = wants_json(argv)
    try:
        # Under --json, usage errors come back to be written as problems too (standalone_mode off).
        code = app(args=argv, prog_name="cityward", standalone_mode=not as_json)
    except CitywardError as exc:
        _fail(exc, as_json)
    except typer.TyperException as exc:  # only under --json: a usage error Typer did not print
        usage = InvalidInput(exc.format_message())
        print_problem(usage)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except OSError as exc:
        _fail(os_error(exc), as_json)
    except Exception as exc:  # a bug: say so plainly; the traceback only on request
        if os.environ.get("CITYWARD_DEBUG"):
            raise
        bug = InternalError(f"{type(exc).__name__}: {exc}",
                            hint="run again with CITYWARD_DEBUG=1 for the traceback, and report it")
        _fail(bug, as_json)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
