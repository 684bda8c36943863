"""The UI's JSON API, for its own script and for other scripts and tests.

`GET /api/runs` (the filters of the runs page, `limit`, `cursor`), `GET /api/counts`,
`GET /api/runs/<id>` (the run document with `children`), `GET /api/runs/<id>/logs?node=`,
`GET /api/workflows`, `GET /api/workflows/<name>`, `POST /api/runs/<id>/cancel`,
`POST /api/runs/<id>/rerun`, `POST /api/runs/<id>/delete`. Errors are `{"error": "..."}`
with 400 (bad input), 404 (no such run or workflow), 409 (a run to delete still active) or
503 (MongoDB or Redis away), mapped in `app.py`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from orchestrator.errors import OrchestratorError, RunNotFound
from orchestrator.store.models import Run
from orchestrator.ui import catalog
from orchestrator.ui.queries import page_cursor, page_limit, run_filter
from orchestrator.ui.state import ui_state


def list_runs(request: Request) -> JSONResponse:
    """A page of runs (full documents), newest first, and the cursor of the next page."""
    orch = ui_state(request).orch
    params = request.query_params
    page = orch.page_runs(run_filter(params), page_limit(params), page_cursor(params))
    return JSONResponse({"runs": [run.to_document() for run in page.runs], "next_cursor": page.next_cursor})


def counts(request: Request) -> JSONResponse:
    """How many runs match the filters (status aside) in each status, and in all."""
    by_status = ui_state(request).orch.store.count_runs_by_status(run_filter(request.query_params))
    return JSONResponse({"counts": by_status, "total": sum(by_status.values())})


def tree_document(run: Run) -> dict[str, Any]:
    """The run document with `children` (a list, empty or not) at every level."""
    return {**run.to_document(), "children": [tree_document(child) for child in run.children]}


def get_run(request: Request) -> JSONResponse:
    """The run document, its child runs (recursively) in `children`."""
    return JSONResponse(tree_document(ui_state(request).orch.run_tree(request.path_params["run_id"])))


def run_logs(request: Request) -> JSONResponse:
    """What the run's nodes (or the node `node`) logged, by node and attempt."""
    orch = ui_state(request).orch
    run_id = request.path_params["run_id"]
    node = request.query_params.get("node") or None
    if orch.store.runs.find_one({"_id": run_id}, {"_id": 1}) is None:
        raise RunNotFound(f"no run with id '{run_id}'")
    logs = orch.logs(run_id, node)
    return JSONResponse(
        {"run_id": run_id, "node": node, "logs": [log.model_dump(mode="json") for log in logs]}
    )


def list_workflows(request: Request) -> JSONResponse:
    """Every registered workflow's summary (see `catalog.WorkflowSummary.to_json`)."""
    return JSONResponse({"workflows": [s.to_json() for s in catalog.summaries(ui_state(request).orch)]})


def get_workflow(request: Request) -> JSONResponse:
    """One workflow's summary, its spec and its recent runs."""
    orch = ui_state(request).orch
    summary = catalog.summary(orch, request.path_params["name"])
    runs = catalog.recent_runs(orch, summary.spec.name)
    return JSONResponse(
        {
            **summary.to_json(),
            "spec": summary.spec.model_dump(mode="json"),
            "recent_runs": [run.to_document() for run in runs],
        }
    )


def cancel(request: Request) -> JSONResponse:
    """Cancel the run and its active descendants; the ids cancelled (none when it was over)."""
    run_id = request.path_params["run_id"]
    return JSONResponse({"run_id": run_id, "cancelled": ui_state(request).orch.cancel(run_id)})


def delete(request: Request) -> JSONResponse:
    """Delete a top-level run that is over, with the runs it started, their logs and wait
    records (`Orchestrator.delete_runs`): 404 unknown, 400 a child run, 409 still active."""
    run_id = request.path_params["run_id"]
    removed = ui_state(request).orch.delete_runs([run_id])
    return JSONResponse({"run_id": run_id, **removed.to_json()})


async def rerun(request: Request) -> JSONResponse:
    """Start a re-run; options `from_failed` and `from_node` in a JSON body or the query."""
    options = await _rerun_options(request)
    orch = ui_state(request).orch
    run_id = request.path_params["run_id"]
    new_id = await run_in_threadpool(orch.rerun, run_id, **options)
    return JSONResponse({"run_id": new_id, "rerun_of": run_id})


async def _rerun_options(request: Request) -> dict[str, Any]:
    """`from_failed` (a boolean) and `from_node` (a node id), from the body or the query."""
    body = await request.body()
    given: dict[str, Any] = {k: v for k, v in request.query_params.items() if k != "token"}
    if body.strip():
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise OrchestratorError(f"the request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise OrchestratorError("the request body must be a JSON object")
        given.update(data)
    unknown = set(given) - {"from_failed", "from_node"}
    if unknown:
        raise OrchestratorError(
            f"unknown re-run options: {', '.join(sorted(unknown))} (from_failed, from_node)"
        )
    from_failed = given.get("from_failed", False)
    if isinstance(from_failed, str):
        from_failed = {"true": True, "1": True, "false": False, "0": False, "": False}.get(
            from_failed.lower()
        )
    if not isinstance(from_failed, bool):
        raise OrchestratorError("'from_failed' must be true or false")
    from_node = given.get("from_node") or None
    if from_node is not None and not isinstance(from_node, str):
        raise OrchestratorError("'from_node' must be a node id")
    return {"from_failed": from_failed, "from_node": from_node}
