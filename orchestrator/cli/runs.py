"""`orchestrator run` and `orchestrator runs`: start runs, list, show, follow and re-run them."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from orchestrator.cli.base import PROGRESS_POLL_S, connected, err, fail, main, out, print_json
from orchestrator.cli.variables import parse_vars
from orchestrator.errors import WaitTimeout

if TYPE_CHECKING:
    from orchestrator.api import Orchestrator
    from orchestrator.store.models import Run

LOG_POLL_S = 0.5  # how often `runs logs --follow` looks for new lines


@main.command("run")
@click.argument("name")
@click.option("--var", "pairs", multiple=True, metavar="KEY=VALUE", help="a variable (JSON when it parses)")
@click.option("--vars", "vars_json", metavar="JSON", help="variables as one JSON object")
@click.option("--wait", is_flag=True, help="wait for the run to end and show it")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    callback=lambda ctx, param, value: _finite_seconds(value),
    help="seconds to wait (with --wait)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (the run document with --wait)")
@click.option("--run-id", default=None, help="the new run's id: a second run with the same id starts nothing")
def run_command(
    name: str,
    pairs: tuple[str, ...],
    vars_json: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    run_id: str | None,
) -> None:
    """Start a run of workflow NAME."""
    variables = parse_vars(pairs, vars_json)
    with connected() as orch:
        orch.ping_broker()  # a run is stored only when it can be sent now
        run_id = orch.trigger(name, variables, trigger={"type": "cli"}, run_id=run_id)
        if not wait:
            print_json({"run_id": run_id}) if as_json else out.print(run_id)
            return
        try:
            run = wait_with_progress(orch, run_id, timeout, show=not as_json)
        except WaitTimeout as exc:
            run = orch.get_run(run_id)
            show_run(orch, run, as_json)
            fail(str(exc), 1)
        show_run(orch, run, as_json)
        if run.status != "finished":
            sys.exit(1)


def _finite_seconds(value: float | None) -> float | None:
    """`--timeout`: a number of seconds above 0 (the type checks), and not `inf` nor `nan`."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", param_hint="--timeout")
    return value


def wait_with_progress(orch: Orchestrator, run_id: str, timeout: float | None, show: bool) -> Run:
    """Wait for a run, with a one-line progress display on stderr."""
    if not show or not err.is_terminal:
        return orch.wait(
            run_id, timeout=timeout, on_progress=_plain_progress() if show else None, poll_s=PROGRESS_POLL_S
        )
    from orchestrator.views.display import progress_line

    with err.status(f"run {run_id} pending") as status:
        return orch.wait(
            run_id,
            timeout=timeout,
            on_progress=lambda run: status.update(progress_line(run)),
            poll_s=PROGRESS_POLL_S,
        )


def _plain_progress() -> Callable[[Run], None]:
    from orchestrator.views.display import progress_line

    last: list[str] = []

    def report(run: Run) -> None:
        line = progress_line(run)
        if not last or last[-1] != line:
            err.print(line)
            last.append(line)

    return report


def show_run(orch: Orchestrator, run: Run, as_json: bool) -> None:
    """Print a run (with its tree of children) as a tree or as JSON."""
    from orchestrator.views.display import run_view

    tree = orch.run_tree(run.id)
    if as_json:
        print_json(tree.to_document())
    else:
        out.print(run_view(tree))


# -- runs -----------------------------------------------------------------------------------


@main.group()
def runs() -> None:
    """Inspect and cancel runs."""


@runs.command("list")
@click.option("--workflow", default=None)
@click.option(
    "--status",
    default=None,
    type=click.Choice(["pending", "running", "finished", "failed", "error", "cancelled"]),
)
@click.option("--parent", default=None, help="only the child runs of this run")
@click.option("--trigger", default=None, help="only runs started so: api, cli, schedule, run_workflow, rerun")
@click.option("--limit", default=50, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
def runs_list(
    workflow: str | None,
    status: str | None,
    parent: str | None,
    trigger: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first."""
    from orchestrator.store.history import RunFilter

    with connected() as orch:
        from orchestrator.views.display import runs_view

        where = RunFilter(workflow=workflow, status=status, parent=parent, trigger=trigger)
        found = orch.page_runs(where, limit).runs
        if as_json:
            print_json([r.to_document() for r in found])
        else:
            out.print(runs_view(found, out.width))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--mermaid", is_flag=True, help="print the run's graph as a Mermaid flowchart, nodes by status")
def runs_show(run_id: str, as_json: bool, mermaid: bool) -> None:
    """Show a run, its nodes and its tree of child runs (RUN_ID may be the start of an id)."""
    with connected() as orch:
        run = orch.get_run(orch.store.resolve_run_id(run_id))
        if mermaid:
            from orchestrator.views.mermaid import run_mermaid

            # the version the run started with; None when removed: its nodes, without edges
            click.echo(run_mermaid(orch.store.workflow_of_run(run.workflow, run.spec_digest), run))
            return
        show_run(orch, run, as_json)


@runs.command("logs")
@click.argument("run_id")
@click.argument("node", required=False)
@click.option("--follow", "-f", is_flag=True, help="print lines as they come until the run is over")
@click.option("--json", "as_json", is_flag=True, help="print the logs as JSON (not with --follow)")
def runs_logs(run_id: str, node: str | None, follow: bool, as_json: bool) -> None:
    """Show what a run's nodes (or NODE) logged: the last 64 KiB of each attempt."""
    from orchestrator.views.display import LogPrinter

    with connected() as orch:
        run_id = orch.store.resolve_run_id(run_id)
        run = orch.get_run(run_id)
        if node is not None and node not in run.nodes:
            fail(f"run {run_id} has no node '{node}' (nodes: {', '.join(run.nodes)})", 2)
        if as_json:
            print_json([log.model_dump() for log in orch.logs(run_id, node)])
            return
        printer = LogPrinter(out, several_nodes=node is None)
        printer.show(orch.logs(run_id, node))
        try:
            while follow and not run.is_over:
                time.sleep(LOG_POLL_S)
                run = orch.get_run(run_id)
                printer.show(orch.logs(run_id, node))
            if follow:
                printer.show(orch.logs(run_id, node))  # the lines written as the run ended
        except KeyboardInterrupt:
            return
        if printer.printed == 0 and not follow:
            err.print(
                f"run {run_id}: no node logged anything" if node is None else f"node '{node}' logged nothing"
            )


@runs.command("rerun")
@click.argument("run_id")
@click.option("--from-failed", is_flag=True, help="keep the nodes that finished; run the rest")
@click.option("--from", "from_node", default=None, metavar="NODE", help="run NODE and every node after it")
@click.option("--wait", is_flag=True, help="wait for the new run to end and show it")
@click.option("--json", "as_json", is_flag=True)
def runs_rerun(run_id: str, from_failed: bool, from_node: str | None, wait: bool, as_json: bool) -> None:
    """Run RUN_ID's workflow again with its variables, as a new run linked to it; with
    --from-failed or --from NODE, only what did not finish (or NODE on), keeping the outputs
    of the nodes before."""
    with connected() as orch:
        run_id = orch.store.resolve_run_id(run_id)
        orch.ping_broker()
        new_id = orch.rerun(run_id, from_failed=from_failed, from_node=from_node)
        if not wait:
            print_json({"run_id": new_id, "rerun_of": run_id}) if as_json else out.print(new_id)
            return
        run = wait_with_progress(orch, new_id, None, show=not as_json)
        show_run(orch, run, as_json)
        if run.status != "finished":
            sys.exit(1)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--no-cascade", is_flag=True, help="leave its child runs going")
def runs_cancel(run_id: str, no_cascade: bool) -> None:
    """Cancel a run and (unless --no-cascade) its child runs (RUN_ID may be the start of an id)."""
    with connected() as orch:
        run_id = orch.store.resolve_run_id(run_id)
        cancelled = orch.cancel(run_id, cascade=not no_cascade)
        out.print(
            f"cancelled {len(cancelled)} run(s): {', '.join(cancelled)}"
            if cancelled
            else f"run {run_id} was already over"
        )
