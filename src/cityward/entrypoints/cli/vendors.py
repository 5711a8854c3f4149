"""`cityward vendors`: the aliases by which advisories name the vendors of the catalog."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from cityward.entrypoints.cli.context import CTX
from cityward.entrypoints.cli.devices import JsonOpt
from cityward.entrypoints.cli.render import out, print_json, table
from cityward.services import vendors

app = typer.Typer(help="Vendor aliases: the names advisories use for the vendors in your catalog.",
                  no_args_is_help=True)


@app.command("aliases")
def aliases(json_out: JsonOpt = False) -> None:
    """Every alias the matcher uses: shipped ones and the city's."""
    items = vendors.list_aliases(CTX.platform.uow, CTX.caller)
    if json_out:
        print_json([dataclasses.asdict(a) for a in items])
        return
    out.print(table("vendor aliases", ["alias", "means", "source", "added by"],
                    ((a.alias, a.vendor, a.source, a.created_by or "") for a in items)))


@app.command("alias")
def alias(
    name: Annotated[str, typer.Argument(help="The name as advisories or inventories write it.")],
    vendor: Annotated[str, typer.Argument(help="The vendor it means, as your catalog names it.")],
) -> None:
    """Say that NAME means VENDOR; the fleet is re-matched for what it touches."""
    added = vendors.add_alias(CTX.platform.uow, CTX.caller, name, vendor)
    out.print(f"{added.alias!r} now means {added.vendor!r}; affected advisories re-matched")


@app.command("unalias")
def unalias(name: Annotated[str, typer.Argument(help="An alias the city added.")]) -> None:
    """Remove an alias the city added; the fleet is re-matched for what it touched."""
    vendors.remove_alias(CTX.platform.uow, CTX.caller, name)
    out.print(f"{name!r} removed; affected advisories re-matched")
