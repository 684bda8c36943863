"""A workflow for people: what `orchestrator workflows show NAME` prints.

Its name and description, variables, schedule with the next times it fires, nodes as a table,
output and the workflows it calls. Every text that comes from the workflow is shown as Rich
`Text`, never as markup (a name may hold `[bold]`), with control characters written as escapes
(`\\x1b`, `\\u202e`) so that no name can move the cursor or reorder the line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from orchestrator.definitions.spec import NodeSpec, ScheduleSpec, WorkflowSpec
from orchestrator.engine.child_runs import called_workflows
from orchestrator.errors import OrchestratorError

PARAM_MAX = 40
"""The most characters of one param's value in the nodes table."""
PARAMS_MAX = 100
"""The most characters of a node's params in the nodes table."""
INLINE_JSON_MAX = 80
"""JSON up to this length is shown on one line; longer, indented."""
FIRINGS = 3
"""How many of a schedule's next firing times are shown."""


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with every character that is not printable (control, format such as bidi
    overrides, line breaks unless kept) written as its Python escape: `\\n`, `\\x1b`, `\\u202e`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else repr(c)[1:-1] for c in text)


def cut(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a final `…` when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact_json(value: Any) -> str:
    """JSON on one line, without spaces after separators (control characters escaped by JSON)."""
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def _json_block(value: Any) -> Text:
    """JSON on one line when short, else indented (control characters are escaped by JSON)."""
    inline = json.dumps(value, default=str, ensure_ascii=False)
    shown = inline if len(inline) <= INLINE_JSON_MAX else json.dumps(value, default=str, indent=2)
    return Text(printable(shown, keep_newlines=True))


def next_firings(schedule: ScheduleSpec, count: int = FIRINGS, now: datetime | None = None) -> list[datetime]:
    """The next `count` times the schedule fires after `now` (default: now), in its time zone,
    computed as beat computes them (`orchestrator.engine.schedules`)."""
    from orchestrator.engine.schedules import WorkflowSchedule

    timing = WorkflowSchedule(workflow="-", cron=schedule.cron, timezone=schedule.timezone)
    return timing.upcoming(count, now or datetime.now(UTC))


def _when(slot: datetime) -> str:
    local = slot.strftime("%Y-%m-%d %H:%M %Z")
    if slot.utcoffset() == timedelta(0):
        return local
    return f"{local} ({slot.astimezone(UTC).strftime('%H:%M')} UTC)"


def _field(title: str, value: Text | str) -> Text:
    return Text.assemble((f"{title}: ", "bold"), value if isinstance(value, Text) else Text(value))


def _schedule_lines(schedule: ScheduleSpec, now: datetime | None) -> list[Text]:
    lines = [_field("schedule", Text(printable(f"cron {schedule.cron} in {schedule.timezone}")))]
    try:
        firings = ", ".join(_when(slot) for slot in next_firings(schedule, now=now))
    except (OrchestratorError, ValueError) as exc:  # a stored cron beat cannot use either
        lines.append(Text(printable(f"  next: cannot be computed: {exc}"), style="red"))
    else:
        lines.append(Text("  next: ") + Text(firings))
    if schedule.variables:
        lines.append(Text("  variables: ") + _json_block(schedule.variables))
    return lines


def _params_cell(node: NodeSpec) -> Text:
    shown = ", ".join(f"{key}={cut(compact_json(value), PARAM_MAX)}" for key, value in node.params.items())
    cell = Text(printable(cut(shown, PARAMS_MAX)))
    extras = []
    if node.timeout_s is not None:
        extras.append(f"timeout {node.timeout_s:g} s")
    if node.retry is not None:
        extras.append(f"{node.retry.max_attempts} attempts, backoff {node.retry.backoff_s:g} s")
    if extras:
        cell.append(("  " if shown else "") + f"({', '.join(extras)})", style="dim")
    return cell


def nodes_table(spec: WorkflowSpec) -> Table:
    """The nodes: id, type, after (`-` for a node that starts with the run), params shown
    compactly and cut, and descriptions when any node has one."""
    described = any(node.description for node in spec.nodes)
    table = Table(show_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("after")
    table.add_column("params")
    if described:
        table.add_column("description")
    for node in spec.nodes:
        row = [
            Text(printable(node.id), style="bold"),
            Text(printable(node.type)),
            Text(printable(", ".join(node.after)) or "-"),
            _params_cell(node),
        ]
        if described:
            row.append(Text(printable(cut(node.description, PARAMS_MAX))))
        table.add_row(*row)
    return table


def _output_line(spec: WorkflowSpec) -> Text:
    if spec.output is not None:
        return _field("output", _json_block(spec.output))
    finals = ", ".join(printable(node.id) for node in spec.final_nodes())
    return _field("output", Text(f"the outputs of the final nodes ({finals})", style="dim"))


def describe_workflow(spec: WorkflowSpec, *, now: datetime | None = None) -> Group:
    """The workflow for `orchestrator workflows show NAME`: name, description, variables,
    schedule (cron, timezone, next firing times after `now`), nodes, output, called workflows."""
    parts: list[Text | Table] = [Text(printable(spec.name), style="bold")]
    if spec.description:
        parts.append(Text(printable(spec.description, keep_newlines=True)))
    parts.append(_field("variables", _json_block(spec.variables) if spec.variables else Text("none")))
    if spec.schedule is not None:
        parts += _schedule_lines(spec.schedule, now)
    else:
        parts.append(_field("schedule", Text("none (runs when triggered)")))
    parts.append(_field("nodes", str(len(spec.nodes))))
    parts.append(nodes_table(spec))
    parts.append(_output_line(spec))
    calls = called_workflows(spec)
    parts.append(_field("calls", Text(printable(", ".join(calls))) if calls else Text("none")))
    return Group(*parts)
