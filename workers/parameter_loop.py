"""`parameter_loop`: run one body node once per value, in parallel or in sequence.

Each iteration is a child run of a one-node workflow (`<workflow>/<node>`, run id
`<run>.<node>.<index>`), so it is a Celery workflow of its own, shows in the run tree, and
is started once whatever the deliveries; the iterations started together are sent as one
Celery `group`. The loop node waits for them the way `run_workflow`
does, holding no worker slot: each iteration's end wakes it, and it starts the next ones
while fewer than the cap (`max_parallel`; 1 in `sequential` mode) are in flight. The body's
params are rendered in the loop's own scope plus `loop_value` and `loop_index`, and checked
against the body type before any iteration starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from celery import group
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from orchestrator.app import app_of
from orchestrator.child_runs import child_run_id
from orchestrator.constants import RUN_OVER
from orchestrator.errors import ConfigurationError, NodeError, OrchestratorError
from orchestrator.launcher import Lineage, prepare_run
from orchestrator.registry import NodeContext, NodeType, Wait
from orchestrator.spec import NodeSpec, WorkflowSpec
from orchestrator.templating import build_scope, render

BODY_NODE = "body"


class LoopBody(BaseModel):
    """The node run once per value: its type and params (templates see `loop_value`, `loop_index`)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)


class ParameterLoopParams(BaseModel):
    """The values to loop over, the body, and how many iterations may run at once."""

    model_config = ConfigDict(extra="forbid")

    values: list[JsonValue]
    body: LoopBody
    mode: Literal["parallel", "sequential"] = "parallel"
    max_parallel: int | None = Field(None, ge=1)
    continue_on_error: bool = True
    timeout_s: float = Field(3600, gt=0, le=30 * 86400)
    poll_interval_s: float = Field(5.0, ge=0.05, le=600)

    def cap(self) -> int:
        """How many iterations may be in flight at once."""
        if self.mode == "sequential":
            return 1
        return min(self.max_parallel or len(self.values), len(self.values))


def iteration_specs(params: ParameterLoopParams, context: NodeContext) -> list[WorkflowSpec]:
    """The one-node workflow of every iteration, its params rendered and checked.

    Raises:
        NodeError: the body type is unknown, or an iteration's params are invalid.
    """
    app = app_of(context)
    where = f"node '{context.node_id}', parameter 'body'"
    try:
        body_type = app.registry.get(params.body.type)
    except ConfigurationError as exc:
        raise NodeError(f"{where}: {exc}") from exc
    scope = build_scope(context.variables, context.outputs, context.run_id, context.workflow)
    specs = []
    for index, value in enumerate(params.values):
        rendered = {
            key: render(
                raw,
                {**scope, "loop_value": value, "loop_index": index},
                f"{where}.params.{key}",
                context.seconds_left(),
            )
            for key, raw in params.body.params.items()
        }
        try:
            body_type.params.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(params)"
            raise NodeError(
                f"{where}: iteration {index} (loop_value {value!r}): parameter '{field}' of "
                f"{body_type.name}: {first['msg']}"
            ) from exc
        node = NodeSpec(id=BODY_NODE, type=body_type.name, params=rendered, timeout_s=params.body.timeout_s)
        specs.append(WorkflowSpec(name=f"{context.workflow}/{context.node_id}", nodes=[node]))
    return specs


def _launch(context: NodeContext, specs: list[WorkflowSpec], values: list[Any], indexes: list[int]) -> None:
    """Start the given iterations, together as one Celery group (a second start of an
    iteration is a no-op: the ids are fixed)."""
    app = app_of(context)
    lineage = Lineage(
        parent_run_id=context.run_id,
        parent_node_id=context.node_id,
        root_run_id=str(context.run.get("root_run_id") or context.run_id),
        depth=int(context.run.get("depth", 0)) + 1,
    )
    canvases, run_ids = [], []
    for index in indexes:
        trigger = {
            "type": "run_workflow",
            "parent_run_id": context.run_id,
            "parent_node_id": context.node_id,
            "loop_index": index,
        }
        variables = {"loop_value": values[index], "loop_index": index}
        run_id = child_run_id(context.run_id, context.node_id, index)
        try:
            _, canvas = prepare_run(app, specs[index], variables, trigger, run_id, lineage)
        except OrchestratorError as exc:
            raise NodeError(f"node '{context.node_id}': iteration {index} could not start: {exc}") from exc
        if canvas is not None:
            canvases.append(canvas)
            run_ids.append(run_id)
    if canvases:
        group(canvases).apply_async()
        context.store.mark_dispatched(run_ids)


def run(params: ParameterLoopParams, context: NodeContext) -> list[dict[str, Any]] | Wait:
    """Check every iteration, start the first ones, then wait for them."""
    if not params.values:
        return []
    depth = int(context.run.get("depth", 0)) + 1
    if depth > context.settings.max_depth:
        raise NodeError(
            f"node '{context.node_id}': recursion limit: iterations would be at depth {depth}, "
            f"past ORCH_MAX_DEPTH={context.settings.max_depth}"
        )
    specs = iteration_specs(params, context)
    _launch(context, specs, params.values, list(range(params.cap())))
    data = {"params": params.model_dump(mode="json")}
    return Wait(run_id=None, timeout_s=params.timeout_s, poll_interval_s=params.poll_interval_s, data=data)


def resume(wait: Mapping[str, Any], context: NodeContext, timed_out: bool) -> list[dict[str, Any]] | None:
    """Start the next iterations as slots free up; the outputs once all are over."""
    params = ParameterLoopParams.model_validate(wait["data"]["params"])
    ids = [child_run_id(context.run_id, context.node_id, i) for i in range(len(params.values))]
    status = {d["_id"]: d["status"] for d in context.store.runs.find({"_id": {"$in": ids}}, {"status": 1})}
    over = [i for i, run_id in enumerate(ids) if status.get(run_id) in RUN_OVER]
    failed = [i for i in over if status[ids[i]] != "finished"]
    in_flight = [i for i, run_id in enumerate(ids) if run_id in status and i not in over]
    stopping = timed_out or bool(failed and not params.continue_on_error)
    if not stopping:
        waiting = [i for i, run_id in enumerate(ids) if run_id not in status]
        free = params.cap() - len(in_flight)
        if waiting and free > 0:
            _launch(context, iteration_specs(params, context), params.values, waiting[:free])
            return None
    if in_flight and not timed_out:
        return None
    if failed and not params.continue_on_error:
        first = context.store.get_run_document(ids[failed[0]])
        raise NodeError(
            f"node '{context.node_id}': iteration {failed[0]} (loop_value {params.values[failed[0]]!r}) "
            f"{first['status']}: {first.get('error')}; continue_on_error is false, so "
            f"{len(ids) - len(over) - len(in_flight)} iteration(s) were not started"
        )
    return [_entry(context, params, i, run_id, status.get(run_id)) for i, run_id in enumerate(ids)]


def _entry(
    context: NodeContext, params: ParameterLoopParams, index: int, run_id: str, status: str | None
) -> dict[str, Any]:
    """One iteration's line of the loop's output."""
    entry: dict[str, Any] = {"loop_index": index, "loop_value": params.values[index], "run_id": run_id}
    if status is None:
        return entry | {"status": "not_started", "output": None, "error": "the loop timed out first"}
    if status not in RUN_OVER:
        return entry | {"status": "timeout", "output": None, "error": f"still {status} at the loop's timeout"}
    doc = context.store.get_run_document(run_id)
    body = doc.get("nodes", {}).get(BODY_NODE, {})
    return entry | {"status": status, "output": body.get("output"), "error": doc.get("error")}


node_type = NodeType(
    name="parameter_loop",
    params=ParameterLoopParams,
    run=run,
    resume=resume,
    raw_params=frozenset({"body"}),
    node_params=frozenset({"body"}),
    description="runs a body node once per value (parallel or sequential), each as a child run",
)
