"""`cityward doctor`: report what earlier versions left that today's rules refuse (exit 1 if any)."""

from __future__ import annotations

from typing import Annotated

import typer

from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.render import out, print_json, table


def doctor(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Check the installation: guessed organization kinds, a second city, names that clash in case (exit 1 if any)."""
    from cityward.services import doctor as checks

    found = checks.diagnose(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json({"ok": not found, "findings": found})
    elif found:
        out.print(table(f"{len(found)} problems", ["check", "what", "problem", "fix"],
                        ((f.check, f.subject, f.problem, f.fix) for f in found)))
    else:
        out.print("no problems found")
    if found:
        raise typer.Exit(1)  # findings: the operation found problems
