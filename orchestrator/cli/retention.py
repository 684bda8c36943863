"""`orchestrator runs prune` and `runs delete`: remove runs that are over, each top-level run
with its tree of child runs, their node logs and wait records (`orchestrator.store.retention`)."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from orchestrator.cli.base import connected, err, fail, out, print_json
from orchestrator.cli.runs import runs
from orchestrator.constants import RUN_OVER

if TYPE_CHECKING:
    from orchestrator.store.retention import Removed

UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s`, `2w`, or a number of days (`30`, `0.5`).

    Raises:
        click.BadParameter: anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([wdhms]?)\s*", text.lower())
    if match is None:
        raise click.BadParameter(f"'{text}' is not an age: write 30d, 12h, 90m, 3600s, 2w or days")
    amount, unit = float(match.group(1)), UNITS[match.group(2) or "d"]
    return timedelta(**{unit: amount})


def _age(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    return None if value is None else parse_age(value)


@runs.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    callback=_age,
    metavar="AGE",
    help="remove runs created longer ago than this: 30d, 12h, 90m, 2w, or days",
)
@click.option("--workflow", default=None, help="only top-level runs of this workflow")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_OVER),
    help="only top-level runs that ended so (repeatable; default: all four)",
)
@click.option("--dry-run", is_flag=True, help="count what would go, remove nothing")
@click.option("--yes", "-y", is_flag=True, help="do not ask before removing")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def runs_prune(
    older_than: timedelta,
    workflow: str | None,
    statuses: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Remove runs that are over and older than --older-than, each top-level run with its
    child runs, node logs and wait records. A tree with a run still active is kept whole."""
    with connected() as orch:

        def prune(dry: bool) -> Removed:
            if not err.is_terminal:
                return orch.prune_runs(older_than, workflow=workflow, statuses=statuses or None, dry_run=dry)
            verb = "counting" if dry else "removing"
            with err.status(f"{verb} runs older than {older_than}…") as status:
                return orch.prune_runs(
                    older_than,
                    workflow=workflow,
                    statuses=statuses or None,
                    dry_run=dry,
                    on_progress=lambda done, found: status.update(
                        f"{verb}: {done.trees + done.kept_active:,} of {found:,} run trees looked at"
                    ),
                )

        if not dry_run and not yes:
            counted = prune(dry=True)
            if counted.trees == 0:
                _report(counted, as_json)
                return
            _confirm(f"Remove {_counts(counted)}?")
        _report(prune(dry=dry_run), as_json)


@runs.command("delete")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@click.option("--yes", "-y", is_flag=True, help="do not ask before removing")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def runs_delete(run_ids: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Remove top-level runs that are over, each with its child runs, node logs and wait
    records; all or none (a run still active is refused: cancel it first)."""
    with connected() as orch:
        if not yes:
            for run_id in run_ids:
                orch.get_run(run_id)  # an unknown id is reported before the question
            trees = f"{len(run_ids)} run tree{'s' if len(run_ids) != 1 else ''}"
            _confirm(f"Remove {trees} ({', '.join(run_ids)})?")
        _report(orch.delete_runs(run_ids), as_json)


def _confirm(question: str) -> None:
    """Ask on a terminal; elsewhere, refuse without `--yes` (exit 2)."""
    if not sys.stdin.isatty():
        fail(f"{question[:-1]}: not asked, input is not a terminal; add --yes to remove", 2)
    if not click.confirm(question, default=False):
        fail("nothing removed", 1)


def _counts(removed: Removed) -> str:
    return (
        f"{removed.trees:,} run tree{'s' if removed.trees != 1 else ''} "
        f"({removed.runs:,} run{'s' if removed.runs != 1 else ''} in all)"
    )


def _report(removed: Removed, as_json: bool) -> None:
    if as_json:
        print_json(removed.to_json())
        return
    verb = "would remove" if removed.dry_run else "removed"
    line = f"{verb} {_counts(removed)}"
    if not removed.dry_run:
        line += f", {removed.node_logs:,} node logs, {removed.wait_records:,} wait records"
    out.print(line)
    if removed.kept_active:
        out.print(f"kept {removed.kept_active:,} run tree(s) in which a run is still active")
    if removed.sample:
        rest = removed.trees - len(removed.sample)
        more = f" and {rest:,} more" if rest > 0 else ""
        out.print(f"{'to remove' if removed.dry_run else 'removed'}: {', '.join(removed.sample)}{more}")
