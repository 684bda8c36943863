"""What the workflows pages say about each registered workflow: its calls, its callers, its
next scheduled firings and its last run.

A workflow *calls* another when one of its nodes is a `run_workflow` whose `workflow` param
is a literal name (not a template), or a `parameter_loop` whose body is such a node. Names
built by templates are known only when a run renders them, so they are not listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.api import Orchestrator
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.engine.child_runs import called_workflows
from orchestrator.store.history import NEWEST_FIRST, RunFilter
from orchestrator.store.models import Run
from orchestrator.views.workflow_view import next_firings as firings_of

Document = dict[str, Any]
FIRINGS = 3
"""How many coming firings of a schedule are shown."""
RECENT_RUNS = 20


@dataclass
class WorkflowSummary:
    """One workflow as the workflows pages show it."""

    spec: WorkflowSpec
    calls: list[str] = field(default_factory=list)
    called_by: list[str] = field(default_factory=list)
    next_firings: list[datetime] = field(default_factory=list)
    last_run: Document | None = None

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-able data (times as ISO strings in UTC)."""
        schedule = self.spec.schedule
        last = self.last_run
        return {
            "name": self.spec.name,
            "description": self.spec.description,
            "node_count": len(self.spec.nodes),
            "schedule": None
            if schedule is None
            else {
                **schedule.model_dump(mode="json"),
                "next": [t.isoformat() for t in self.next_firings],
            },
            "calls": self.calls,
            "called_by": self.called_by,
            "last_run": None
            if last is None
            else {
                "id": last["_id"],
                "status": last.get("status"),
                "created_at": _iso(last.get("created_at")),
            },
        }


def _iso(value: object) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


def callers(specs: Iterable[WorkflowSpec]) -> dict[str, list[str]]:
    """For each workflow name called by others, the names of its callers (sorted)."""
    called_by: dict[str, set[str]] = {}
    for spec in specs:
        for name in called_workflows(spec):
            called_by.setdefault(name, set()).add(spec.name)
    return {name: sorted(names) for name, names in called_by.items()}


def next_firings(spec: WorkflowSpec, count: int = FIRINGS, now: datetime | None = None) -> list[datetime]:
    """The next `count` slots of the workflow's schedule, in its time zone (none unscheduled)."""
    return [] if spec.schedule is None else firings_of(spec.schedule, count, now)


def last_run(orch: Orchestrator, name: str) -> Document | None:
    """The newest run of a workflow (its id, status and creation time), or None."""
    fields = {"_id": 1, "status": 1, "created_at": 1}
    found = orch.store.runs.find({"workflow": name}, fields).sort(NEWEST_FIRST).limit(1)
    return next(iter(found), None)


def summaries(orch: Orchestrator) -> list[WorkflowSummary]:
    """Every registered workflow, by name, with calls, callers, firings and last run."""
    specs = orch.workflows()
    called_by = callers(specs)
    return [
        WorkflowSummary(
            spec,
            called_workflows(spec),
            called_by.get(spec.name, []),
            next_firings(spec),
            last_run(orch, spec.name),
        )
        for spec in specs
    ]


def summary(orch: Orchestrator, name: str) -> WorkflowSummary:
    """One workflow's summary (`WorkflowNotFound` when it is not registered)."""
    spec = orch.store.get_workflow(name)
    called_by = callers(orch.workflows())
    return WorkflowSummary(
        spec, called_workflows(spec), called_by.get(name, []), next_firings(spec), last_run(orch, name)
    )


def recent_runs(orch: Orchestrator, name: str, limit: int = RECENT_RUNS) -> list[Run]:
    """The workflow's newest runs."""
    return orch.page_runs(RunFilter(workflow=name), limit).runs
