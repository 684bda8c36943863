"""`orchestrator lists`: the named lists `user_list` nodes keep."""

from __future__ import annotations

import json

import click
from rich.text import Text

from orchestrator.cli.base import connected, fail, main, out, print_json


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def lists(ctx: click.Context, as_json: bool) -> None:
    """Named lists kept by `user_list` nodes; with no command, every list with its count."""
    if ctx.invoked_subcommand is not None:
        return
    from orchestrator.store.user_lists import UserLists

    with connected() as orch:
        counts = UserLists(orch.store.db).names()
        if as_json:
            print_json([{"list": name, "count": n} for name, n in counts.items()])
            return
        for name, n in counts.items():
            out.print(Text.assemble((name, "bold"), f"  {n} item{'' if n == 1 else 's'}"))


@lists.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def lists_show(name: str, as_json: bool) -> None:
    """Show the items of list NAME, oldest first (exit 2 when no such list was ever written)."""
    from orchestrator.store.user_lists import UserLists

    with connected() as orch:
        store = UserLists(orch.store.db)
        if not store.exists(name):
            fail(f"no list named '{name}' (lists are created by a user_list node's first write)", 2)
        items = store.read(name)
        if as_json:
            print_json({"list": name, "items": items, "count": len(items)})
            return
        out.print(Text.assemble((name, "bold"), f"  {len(items)} item{'' if len(items) == 1 else 's'}"))
        for index, item in enumerate(items):
            out.print(Text(f"{index:>4}  ") + Text(json.dumps(item, default=str, ensure_ascii=False)))
