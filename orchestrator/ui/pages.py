"""The UI's pages, rendered on the server: the runs list, a run, the workflows, a workflow.

Endpoints are plain functions: pymongo is synchronous, and Starlette runs such endpoints in
its thread pool, so a slow query holds one thread, never the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from pydantic import JsonValue
from starlette.requests import Request
from starlette.responses import Response

from orchestrator.constants import RUN_STATUSES, TriggerType
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.store.models import NodeState, Run
from orchestrator.ui import catalog
from orchestrator.ui.graph import NodeView, render_svg, run_nodes, spec_nodes
from orchestrator.ui.lineage import lineage_of
from orchestrator.ui.queries import filter_values, page_cursor, page_limit, run_filter
from orchestrator.ui.state import ui_state
from orchestrator.views.display import seconds


@dataclass(frozen=True)
class NodePanel:
    """What the panel of one node of a run shows (its logs are fetched when it opens)."""

    id: str
    type: str
    params: dict[str, JsonValue] | None
    """The params as written in the workflow (rendered values are not stored); None when the
    workflow no longer has the node."""
    state: NodeState


def runs_page(request: Request) -> Response:
    """`/`: runs newest first, filtered, a page at a time; counts come from `/api/counts`."""
    ui = ui_state(request)
    params = request.query_params
    cursor = page_cursor(params)
    limit = page_limit(params)
    page = ui.orch.page_runs(run_filter(params), limit, cursor)
    carried = filter_values(params) | ({"limit": str(limit)} if "limit" in params else {})
    return ui.templates.TemplateResponse(
        request,
        "runs.html",
        {
            "runs": page.runs,
            "next_cursor": page.next_cursor,
            "cursor": cursor,
            "filters": filter_values(params),
            "carried": carried,
            "statuses": RUN_STATUSES,
            "triggers": get_args(TriggerType),
            "workflow_names": sorted(ui.orch.store.workflow_names()),
        },
    )


def node_view(state: NodeState) -> NodeView:
    """What a node's box says: status, duration (from its start), attempts."""
    duration = seconds(state.duration_s) if state.started_at is not None else ""
    return NodeView(state.status, duration, state.attempts)


def node_panels(spec: WorkflowSpec | None, run: Run) -> list[NodePanel]:
    """The panels of a run's nodes, with the spec's params where the spec has the node."""
    known = {n.id: n for n in spec.nodes} if spec is not None else {}
    panels = []
    for node_id, state in run.nodes.items():
        node = known.get(node_id)
        panels.append(
            NodePanel(node_id, node.type if node else "", dict(node.params) if node else None, state)
        )
    return panels


def run_page(request: Request) -> Response:
    """`/runs/<id>`: the run's graph, nodes, lineage, variables and results (live while active)."""
    ui = ui_state(request)
    run = ui.orch.run_tree(request.path_params["run_id"])
    spec = ui.orch.store.workflow_of_run(run.workflow, run.spec_digest)  # the version it ran
    nodes = run_nodes(spec, run.nodes)
    context: dict[str, Any] = {
        "run": run,
        "graph": render_svg(nodes, {node_id: node_view(state) for node_id, state in run.nodes.items()}),
        "panels": node_panels(spec, run),
        "lineage": lineage_of(ui.orch, run),
        "spec_missing": spec is None,
        "spec_changed": spec is not None and {n.id for n in spec.nodes} != set(run.nodes),
    }
    return ui.templates.TemplateResponse(request, "run.html", context)


def workflows_page(request: Request) -> Response:
    """`/workflows`: every registered workflow with schedule, calls, callers and last run."""
    ui = ui_state(request)
    return ui.templates.TemplateResponse(request, "workflows.html", {"workflows": catalog.summaries(ui.orch)})


def workflow_page(request: Request) -> Response:
    """`/workflows/<name>`: a workflow's graph, variables, schedule, links and recent runs."""
    ui = ui_state(request)
    summary = catalog.summary(ui.orch, request.path_params["name"])
    context = {
        "summary": summary,
        "spec": summary.spec,
        "graph": render_svg(spec_nodes(summary.spec)),
        "runs": catalog.recent_runs(ui.orch, summary.spec.name),
        "recent": catalog.RECENT_RUNS,
    }
    return ui.templates.TemplateResponse(request, "workflow.html", context)
