"""`run_workflow`: start another workflow as a child run, fire-and-forget or waiting for it.

Waiting holds no worker slot (see `orchestrator.engine.waiting`); a failed child is data the parent
can branch on (`targetStatus`), never a failure of the parent node. A `fire_and_forget` node is
pure (`NodeType.pure`): it creates its child's document, has its own end recorded, and only then
sends the child (`AfterEnd`), so it costs its parent's document one update, and a parent
cancelled before the node's end leaves a child that never ran (`cancelled`), not a running one.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from orchestrator.constants import RUN_OVER
from orchestrator.engine.app import app_of
from orchestrator.engine.child_runs import (
    check_child_variables,
    child_run_id,
    finished_output,
    refused_output,
    timeout_output,
)
from orchestrator.engine.launcher import (
    Lineage,
    dispatch,
    drop_unsent,
    launch_run,
    prepare_run,
    unrecorded,
)
from orchestrator.engine.registry import AfterEnd, NodeContext, NodeType, Wait
from orchestrator.errors import WorkflowNotFound
from orchestrator.store.models import aware, utcnow


class RunWorkflowParams(BaseModel):
    """Which workflow to start, how, and with which variables."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1)
    mode: Literal["wait", "fire_and_forget"] = "wait"
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    timeout_s: float = Field(300, gt=0, le=30 * 86400)
    poll_interval_s: float = Field(1.5, ge=0.05, le=600)


def run(params: RunWorkflowParams, context: NodeContext) -> dict[str, Any] | AfterEnd | Wait:
    """Start the child run (once, whatever the deliveries), then return or wait."""
    app = app_of(context)
    depth = int(context.run.get("depth", 0)) + 1
    limit = context.settings.max_depth
    if depth > limit:
        return refused_output(
            params.workflow,
            f"recursion limit: a child of '{context.workflow}' would be at depth {depth}, "
            f"past ORCH_MAX_DEPTH={limit}; no child run was started",
        )
    try:
        spec = context.store.get_workflow(params.workflow)
    except WorkflowNotFound as exc:
        return refused_output(params.workflow, str(exc))
    check_child_variables(
        params.variables,
        context.node_id,
        context.settings.max_child_variables_bytes,
        spec.allow_secret_variables,
    )
    lineage = Lineage(
        parent_run_id=context.run_id,
        parent_node_id=context.node_id,
        root_run_id=str(context.run.get("root_run_id") or context.run_id),
        depth=depth,
    )
    trigger = {
        "type": "run_workflow",
        "parent_run_id": context.run_id,
        "parent_node_id": context.node_id,
        "mode": params.mode,
    }
    child_id = child_run_id(context.run_id, context.node_id)
    if params.mode == "fire_and_forget":
        # The child's document now; its canvas once this node's end is recorded (`AfterEnd`),
        # so that a parent cancelled meanwhile leaves a child that never ran, not a running one.
        run_id, canvas = prepare_run(app, spec, params.variables, trigger, run_id=child_id, lineage=lineage)
        return AfterEnd(
            output={"status": "triggered", "run_id": run_id, "targetWorkflow": spec.name},
            send=partial(dispatch, app, run_id, canvas),
            drop=partial(drop_unsent, app, run_id, unrecorded(context.run_id, context.node_id)),
        )
    run_id, _ = launch_run(app, spec, params.variables, trigger, run_id=child_id, lineage=lineage)
    data = {"targetWorkflow": spec.name, "timeout_s": params.timeout_s}
    return Wait(run_id=run_id, timeout_s=params.timeout_s, poll_interval_s=params.poll_interval_s, data=data)


def resume(wait: Mapping[str, Any], context: NodeContext, timed_out: bool) -> dict[str, Any] | None:
    """The node's output once the child is over or the timeout passed; None to keep waiting."""
    child = context.store.get_run_document(wait["run_id"])
    elapsed = (utcnow() - aware(wait["since"])).total_seconds()
    target = wait["data"]["targetWorkflow"]
    if child["status"] in RUN_OVER:
        return finished_output(child, target, elapsed)
    if timed_out:
        return timeout_output(child, target, elapsed, wait["data"]["timeout_s"])
    return None


def may_wait(params: Mapping[str, Any]) -> bool:
    """Whether a node with these params (as written) may wait: all but `fire_and_forget`."""
    return bool(params.get("mode", "wait") != "fire_and_forget")


node_type = NodeType(
    name="run_workflow",
    params=RunWorkflowParams,
    run=run,
    resume=resume,
    description="starts another workflow as a child run (wait or fire_and_forget)",
    # fire_and_forget: recorded once, at its end, and only then is the child sent
    pure=True,
    may_wait=may_wait,
)
