"""Human-readable views of runs for the command line: a tree of runs, nodes and children."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestrator.store.models import NodeState, Run
from orchestrator.store.node_logs import LogLine, NodeLog

QUEUE_NOTE_S = 1.0  # a run that waited this long for a worker says so: more workers may help

STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "waiting": "blue",
    "finished": "green",
    "failed": "red",
    "error": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
}


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


def seconds(value: float | None) -> str:
    """A duration for people: `0.12 s`, `3.4 s`, `2 min 5 s`."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _node_line(node_id: str, state: NodeState) -> Text:
    line = Text.assemble((node_id, "bold"), "  ", status_text(state.status), f"  {seconds(state.duration_s)}")
    if state.attempts > 1:
        line.append(f"  attempts {state.attempts}")
    if state.error and state.status in ("failed", "skipped"):
        line.append(f"  {state.error}", style="red" if state.status == "failed" else "dim")
    elif state.status == "finished" and state.output is not None:
        line.append(f"  → {_short(state.output)}", style="dim")
    return line


def _run_label(run: Run) -> Text:
    label = Text.assemble(
        (run.workflow, "bold"), f"  {run.id}  ", status_text(run.status), f"  {seconds(run.duration_s)}"
    )
    if run.status == "pending":
        waiting = "queued for a worker" if run.dispatched_at else "not sent to a worker yet"
        label.append(f"  ({waiting})", style="dim")
    elif (run.queued_s or 0.0) >= QUEUE_NOTE_S:
        label.append(f"  (queued {seconds(run.queued_s)} for a worker)", style="yellow")
    if run.parent_node_id:
        label.append(f"  (started by node {run.parent_node_id})", style="dim")
    if run.error:
        label.append(f"\n{run.error}", style="red")
    return label


def _add_run(tree: Tree, run: Run) -> None:
    children_by_node: dict[str, list[Run]] = {}
    for child in run.children:
        children_by_node.setdefault(child.parent_node_id or "", []).append(child)
    for node_id, state in run.nodes.items():
        branch = tree.add(_node_line(node_id, state))
        for child in children_by_node.pop(node_id, []):
            _add_run(branch.add(_run_label(child)), child)
    for orphans in children_by_node.values():
        for child in orphans:
            _add_run(tree.add(_run_label(child)), child)


def run_tree(run: Run) -> Tree:
    """The run, its nodes (status, duration, output or error) and its child runs under the
    node that started them, recursively."""
    tree = Tree(_run_label(run))
    _add_run(tree, run)
    return tree


def run_view(run: Run) -> Group:
    """The run tree followed by its results, when it has any, or why they were left out."""
    parts: list[Any] = [run_tree(run)]
    if run.results is not None:
        parts.append(Text("results: ", style="bold") + Text(_short(run.results, 400)))
    elif run.results_omitted:
        parts.append(Text("results omitted: ", style="bold") + Text(run.results_omitted, style="yellow"))
    return Group(*parts)


RUN_COLUMNS = ("run id", "workflow", "status", "trigger", "created (UTC)", "duration", "started by")


def runs_view(runs: list[Run], width: int) -> Table | Group:
    """Runs, newest first, in `width` columns: a table when it fits, else two lines per run.

    Nothing is cut: the ids are what `runs show` takes.
    """
    rows = [_run_row(run) for run in runs]
    widths = [max([len(title)] + [len(row[i].plain) for row in rows]) for i, title in enumerate(RUN_COLUMNS)]
    if sum(widths) + 3 * (len(widths) - 1) + 2 <= width:
        table = Table(show_edge=False)
        for title in RUN_COLUMNS:
            table.add_column(title, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        return table
    records = []
    for row in rows:
        run_id, workflow, status, trigger, created, duration, started_by = row
        details = [workflow, trigger, created] + ([started_by] if started_by.plain else [])
        records.append(Text.assemble(run_id, "  ", status, "  ", duration))
        records.append(Text("    ") + Text(" · ", style="dim").join(details))
    return Group(*records)


def _run_row(run: Run) -> list[Text]:
    return [
        Text(run.id),
        Text(run.workflow, style="bold"),
        status_text(run.status),
        Text(str(run.trigger.get("type", ""))),
        Text(run.created_at.strftime("%Y-%m-%d %H:%M:%S")),
        Text(seconds(run.duration_s)),
        Text(_started_by(run), style="dim"),
    ]


def _started_by(run: Run) -> str:
    """Which node of which run started this one: a child's id starts with its parent's, so the
    node alone says it (`node fetch`); the parent's id only when it does not."""
    if not run.parent_run_id:
        return ""
    node = f"node {run.parent_node_id}" if run.parent_node_id else "a run"
    return node if run.id.startswith(f"{run.parent_run_id}.") else f"{node} of {run.parent_run_id}"


def progress_line(run: Run) -> str:
    """One line for a progress display: status and how many nodes are done."""
    done = sum(1 for s in run.nodes.values() if s.status in ("finished", "failed", "skipped"))
    active = [n for n, s in run.nodes.items() if s.status in ("running", "waiting")]
    now = f", running: {', '.join(active)}" if active else ""
    return f"{run.workflow} {run.id[:8]}: {run.status}, {done}/{len(run.nodes)} nodes done{now}"


LEVEL_STYLE = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red", "PRINT": "cyan"}


class LogPrinter:
    """Prints node logs, each line once however often the logs are read (`--follow`).

    A log keeps its last lines (`cut_lines` dropped before them): line `i` of a read is line
    `cut_lines + i` of the attempt, which is how lines already printed are recognised.
    """

    def __init__(self, console: Console, several_nodes: bool) -> None:
        self._console = console
        self._several = several_nodes
        self._next: dict[tuple[str, int], int] = {}
        self.printed = 0

    def show(self, logs: list[NodeLog]) -> None:
        """Print the lines of `logs` not printed yet."""
        for log in logs:
            key = (log.node_id, log.attempt)
            start = self._next.get(key, 0)
            if start < log.cut_lines:
                note = f"… {log.cut_lines - start:,} earlier line(s) not kept (the log keeps the last 64 KiB)"
                self._console.print(Text(self._where(log) + note, style="dim"))
                start = log.cut_lines
            for line in log.lines[start - log.cut_lines :]:
                self._console.print(self._line(log, line))
                self.printed += 1
            self._next[key] = log.cut_lines + len(log.lines)

    def _where(self, log: NodeLog) -> str:
        attempt = f"#{log.attempt}" if log.attempt > 1 else ""
        return f"{log.node_id}{attempt}  " if self._several or attempt else ""

    def _line(self, log: NodeLog, line: LogLine) -> Text:
        when = datetime.fromtimestamp(line.t, UTC).strftime("%H:%M:%S.%f")[:-3]
        style = LEVEL_STYLE.get(line.level, "")
        return Text.assemble((when + " ", "dim"), (f"{line.level:<7} ", style), self._where(log), line.text)
