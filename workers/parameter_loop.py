"""`parameter_loop`: run one body node once per value, in parallel or in sequence.

Each iteration is a child run of a one-node workflow (`<workflow>/<node>`, run id
`<run>.<node>.<index>`), so it is a Celery workflow of its own, shows in the run tree, and
is started once whatever the deliveries; the iterations started together are sent as one
Celery `group`. The loop node waits for them the way `run_workflow`
does, holding no worker slot: each iteration's end wakes it, and it starts the next ones
while fewer than the cap (`max_parallel`; 1 in `sequential` mode) are in flight. The body's
params are rendered in the loop's own scope plus `loop_value` and `loop_index`, and checked
against the body type before any iteration starts.

Its cost per iteration does not grow with the number of values: the values are kept beside
the wait record in chunks (`WaitRecords.put_items`) and read a slice at a time, a poll counts
the iterations by status on the server (one aggregate over the index `children_of_node`), and
iterations start in index order, so the number started is the number of child runs. With
`output: summary` the loop's output is counts and the failures, whatever the number of values:
each iteration's result stays in its own run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from celery import group
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from orchestrator.constants import RUN_OVER
from orchestrator.definitions.spec import NodeSpec, WorkflowSpec
from orchestrator.definitions.templating import build_scope, render
from orchestrator.engine.app import app_of
from orchestrator.engine.child_runs import child_run_id
from orchestrator.engine.launcher import Lineage, prepare_run
from orchestrator.engine.registry import NodeContext, NodeType, Wait
from orchestrator.errors import ConfigurationError, NodeError, OrchestratorError

BODY_NODE = "body"
MAX_LISTED = 2000
"""Most values a loop with `output: list` takes: its output lists every iteration (about 150
bytes plus the body's output each) in its run document; `output: summary` has no such limit."""
MAX_FAILURES_LISTED = 20
"""Failed iterations named in a summary (the rest are counted)."""
FAILED = tuple(status for status in RUN_OVER if status != "finished")


class LoopBody(BaseModel):
    """The node run once per value: its type and params (templates see `loop_value`, `loop_index`)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)


class ParameterLoopParams(BaseModel):
    """The values to loop over, the body, how many iterations may run at once, and what the
    loop returns."""

    model_config = ConfigDict(extra="forbid")

    values: list[JsonValue]
    body: LoopBody
    mode: Literal["parallel", "sequential"] = "parallel"
    max_parallel: int | None = Field(None, ge=1)
    continue_on_error: bool = True
    timeout_s: float = Field(3600, gt=0, le=30 * 86400)
    poll_interval_s: float = Field(5.0, ge=0.05, le=600)
    output: Literal["list", "summary"] = "list"

    @model_validator(mode="after")
    def _listable(self) -> Self:
        if self.output == "list" and len(self.values) > MAX_LISTED:
            raise ValueError(
                f"{len(self.values):,} values with `output: list`, which takes at most {MAX_LISTED:,} (the "
                "output lists every iteration in the run document); set `output: summary` for counts and "
                "failures, each iteration's result staying in its own run"
            )
        return self


class LoopPlan(BaseModel):
    """What the loop keeps in its wait record while it waits: its params without the values
    (kept beside the record, `WaitRecords.put_items`) and how many there are."""

    model_config = ConfigDict(extra="forbid")

    body: LoopBody
    count: int
    cap: int
    continue_on_error: bool
    output: Literal["list", "summary"]

    @classmethod
    def of(cls, params: ParameterLoopParams) -> LoopPlan:
        """The plan of a loop over `params.values`."""
        count = len(params.values)
        cap = 1 if params.mode == "sequential" else min(params.max_parallel or count, count)
        return cls(
            body=params.body,
            count=count,
            cap=cap,
            continue_on_error=params.continue_on_error,
            output=params.output,
        )


def iteration_specs(
    body: LoopBody, values: list[Any], first_index: int, context: NodeContext
) -> list[WorkflowSpec]:
    """The one-node workflow of each iteration from `first_index` on (one per value given),
    its params rendered and checked.

    Raises:
        NodeError: the body type is unknown, or an iteration's params are invalid.
    """
    app = app_of(context)
    where = f"node '{context.node_id}', parameter 'body'"
    try:
        body_type = app.registry.get(body.type)
    except ConfigurationError as exc:
        raise NodeError(f"{where}: {exc}") from exc
    scope = build_scope(context.variables, context.outputs, context.run_id, context.workflow)
    specs = []
    for index, value in enumerate(values, start=first_index):
        rendered = {
            key: render(
                raw,
                {**scope, "loop_value": value, "loop_index": index},
                f"{where}.params.{key}",
                context.seconds_left(),
            )
            for key, raw in body.params.items()
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
        node = NodeSpec(id=BODY_NODE, type=body_type.name, params=rendered, timeout_s=body.timeout_s)
        specs.append(WorkflowSpec(name=f"{context.workflow}/{context.node_id}", nodes=[node]))
    return specs


def _launch(context: NodeContext, specs: list[WorkflowSpec], values: list[Any], first_index: int) -> None:
    """Start the iterations from `first_index` on (one per spec), together as one Celery group
    (a second start of an iteration is a no-op: the ids are fixed)."""
    app = app_of(context)
    lineage = Lineage(
        parent_run_id=context.run_id,
        parent_node_id=context.node_id,
        root_run_id=str(context.run.get("root_run_id") or context.run_id),
        depth=int(context.run.get("depth", 0)) + 1,
    )
    canvases, run_ids = [], []
    for index, (spec, value) in enumerate(zip(specs, values, strict=True), start=first_index):
        trigger = {
            "type": "run_workflow",
            "parent_run_id": context.run_id,
            "parent_node_id": context.node_id,
            "loop_index": index,
        }
        variables = {"loop_value": value, "loop_index": index}
        run_id = child_run_id(context.run_id, context.node_id, index)
        try:
            _, canvas = prepare_run(app, spec, variables, trigger, run_id, lineage)
        except OrchestratorError as exc:
            raise NodeError(f"node '{context.node_id}': iteration {index} could not start: {exc}") from exc
        if canvas is not None:
            canvases.append(canvas)
            run_ids.append(run_id)
    if canvases:
        group(canvases).apply_async()
        context.store.mark_dispatched(run_ids)


def run(params: ParameterLoopParams, context: NodeContext) -> list[dict[str, Any]] | dict[str, Any] | Wait:
    """Check every iteration, keep the values, start the first ones, then wait for them."""
    plan = LoopPlan.of(params)
    if not params.values:
        return [] if plan.output == "list" else _summary(context, plan, Progress.of({}), [])
    depth = int(context.run.get("depth", 0)) + 1
    if depth > context.settings.max_depth:
        raise NodeError(
            f"node '{context.node_id}': recursion limit: iterations would be at depth {depth}, "
            f"past ORCH_MAX_DEPTH={context.settings.max_depth}"
        )
    specs = iteration_specs(params.body, params.values, 0, context)  # every one checked first
    context.store.wait_records.put_items(context.run_id, context.node_id, params.values)
    _launch(context, specs[: plan.cap], params.values[: plan.cap], 0)
    data = {"plan": plan.model_dump(mode="json")}
    return Wait(run_id=None, timeout_s=params.timeout_s, poll_interval_s=params.poll_interval_s, data=data)


def _values(context: NodeContext, start: int, stop: int) -> list[Any]:
    """The loop's values `start` to `stop` (excluded), as it kept them."""
    try:
        return context.store.wait_records.items(context.run_id, context.node_id, start, stop)
    except LookupError as exc:
        raise NodeError(f"node '{context.node_id}': {exc}") from exc


def resume(
    wait: Mapping[str, Any], context: NodeContext, timed_out: bool
) -> list[dict[str, Any]] | dict[str, Any] | None:
    """Start the next iterations as slots free up; the output once all are over."""
    plan = _plan_of(wait["data"], context)
    progress = Progress.of(context.store.node_children_by_status(context.run_id, context.node_id))
    started, in_flight = progress.started, progress.in_flight
    stopping = timed_out or bool(progress.failed and not plan.continue_on_error)
    if not stopping and started < plan.count and in_flight < plan.cap:
        stop = min(plan.count, started + plan.cap - in_flight)
        values = _values(context, started, stop)
        _launch(context, iteration_specs(plan.body, values, started, context), values, started)
        return None
    if in_flight and not timed_out:
        return None
    if progress.failed and not plan.continue_on_error:
        first = _failures(context, MAX_FAILURES_LISTED)[0]
        raise NodeError(
            f"node '{context.node_id}': iteration {first['loop_index']} (loop_value {first['loop_value']!r}) "
            f"{first['status']}: {first['error']}; continue_on_error is false, so "
            f"{plan.count - started} iteration(s) were not started"
        )
    if plan.output == "summary":
        return _summary(context, plan, progress, _failures(context, MAX_FAILURES_LISTED))
    return _listed(context, plan)


@dataclass(frozen=True)
class Progress:
    """Where a loop stands, from its iteration runs counted by status."""

    by_status: Mapping[str, int]
    started: int
    finished: int
    failed: int
    """Over without finishing: `failed`, `error` or `cancelled`."""
    in_flight: int

    @classmethod
    def of(cls, by_status: Mapping[str, int]) -> Progress:
        """The progress of iteration runs counted by status (`node_children_by_status`)."""
        started = sum(by_status.values())
        over = sum(by_status.get(status, 0) for status in RUN_OVER)
        finished = by_status.get("finished", 0)
        return cls(by_status, started, finished, over - finished, started - over)


def _plan_of(data: Mapping[str, Any], context: NodeContext) -> LoopPlan:
    """The plan in a wait record. A record of an earlier version held the params, values
    included: it is upgraded once, its values kept beside it as a new record's are."""
    if "plan" in data:
        return LoopPlan.model_validate(data["plan"])
    params = ParameterLoopParams.model_validate(data["params"])
    plan = LoopPlan.of(params)
    records = context.store.wait_records
    records.put_items(context.run_id, context.node_id, params.values)
    records.set_data(context.run_id, context.node_id, {"plan": plan.model_dump(mode="json")})
    return plan


def _failures(context: NodeContext, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` iterations that did not finish, by index."""
    fields = ("error", "variables.loop_value", "variables.loop_index")
    docs = context.store.node_children(context.run_id, context.node_id, FAILED, fields, limit)
    entries = [
        {
            "loop_index": doc["variables"]["loop_index"],
            "loop_value": doc["variables"]["loop_value"],
            "run_id": doc["_id"],
            "status": doc["status"],
            "error": doc.get("error"),
        }
        for doc in docs
    ]
    return sorted(entries, key=lambda entry: int(entry["loop_index"]))


def _summary(
    context: NodeContext, plan: LoopPlan, progress: Progress, failures: list[dict[str, Any]]
) -> dict[str, Any]:
    """The loop's output with `output: summary`: counts by outcome, and the first failures."""
    return {
        "iterations": plan.count,
        "finished": progress.finished,
        "failed": progress.failed,
        "timeout": progress.in_flight,
        "not_started": plan.count - progress.started,
        "by_status": dict(sorted(progress.by_status.items())),
        "failures": failures,
        "run_id_prefix": f"{child_run_id(context.run_id, context.node_id)}.",
    }


def _listed(context: NodeContext, plan: LoopPlan) -> list[dict[str, Any]]:
    """The loop's output with `output: list`: one entry per value, in order."""
    docs = context.store.node_children(context.run_id, context.node_id, fields=("error", "nodes.body.output"))
    by_id = {doc["_id"]: doc for doc in docs}
    values = _values(context, 0, plan.count)
    return [
        _entry(index, value, child_run_id(context.run_id, context.node_id, index), by_id)
        for index, value in enumerate(values)
    ]


def _entry(index: int, value: Any, run_id: str, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One iteration's line of the loop's output."""
    entry: dict[str, Any] = {"loop_index": index, "loop_value": value, "run_id": run_id}
    doc = docs.get(run_id)
    if doc is None:
        return entry | {"status": "not_started", "output": None, "error": "the loop timed out first"}
    status = doc["status"]
    if status not in RUN_OVER:
        return entry | {"status": "timeout", "output": None, "error": f"still {status} at the loop's timeout"}
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
