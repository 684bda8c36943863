"""`collect`: wait for runs started elsewhere (fire-and-forget children) and gather their results.

The collector of a fire-and-forget fan-out: given run ids, it waits (holding no worker slot)
until every one is over or `timeout_s` passes, then returns one line per run in the order
given. The runs are not its own children, so no wake-up reaches it: it polls every
`poll_interval_s`.

A poll costs the same for 10 runs or 10,000: the ids are kept beside the wait record
(`WaitRecords.put_items`, in chunks), and the record holds a cursor, the number of leading
ids whose runs are over (a run that is over stays over). A poll looks only past the cursor,
a chunk at a time, and stops at the first run still going.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.constants import RUN_OVER
from orchestrator.engine.registry import NodeContext, NodeType, Wait
from orchestrator.store.wait_records import ITEMS_PER_CHUNK

LINE = {"status": 1, "workflow": 1, "results": 1, "error": 1}
"""What a line of the output reads of each run."""


class CollectParams(BaseModel):
    """The runs to wait for, and how long."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[str | None]
    timeout_s: float = Field(300, gt=0, le=30 * 86400)
    poll_interval_s: float = Field(0.5, ge=0.05, le=600)


def run(params: CollectParams, context: NodeContext) -> Wait:
    """Keep the ids, then wait for the runs (ids that are null, from children that never
    started, are reported as such)."""
    context.store.wait_records.put_items(context.run_id, context.node_id, params.run_ids)
    data = {"count": len(params.run_ids), "over_before": 0, "timeout_s": params.timeout_s}
    return Wait(run_id=None, timeout_s=params.timeout_s, poll_interval_s=params.poll_interval_s, data=data)


def resume(wait: Mapping[str, Any], context: NodeContext, timed_out: bool) -> dict[str, Any] | None:
    """`{runs: [...], finished, failed, pending}` once every run is over, or at the timeout."""
    data = _upgraded(wait["data"], context)
    count = int(data["count"])
    if not timed_out:
        over_before = _over_before(context, int(data["over_before"]), count)
        if over_before != data["over_before"]:
            context.store.wait_records.set_data(
                context.run_id, context.node_id, {**data, "over_before": over_before}
            )
        if over_before < count:
            return None
    run_ids: list[str | None] = context.store.wait_records.items(context.run_id, context.node_id, 0, count)
    runs = []
    for start in range(0, count, ITEMS_PER_CHUNK):
        chunk = run_ids[start : start + ITEMS_PER_CHUNK]
        docs = {d["_id"]: d for d in context.store.runs.find({"_id": {"$in": [i for i in chunk if i]}}, LINE)}
        runs += [_line(run_id, docs.get(run_id) if run_id else None) for run_id in chunk]
    counts = {key: sum(1 for r in runs if r["status"] == key) for key in ("finished", "failed")}
    return {"runs": runs, **counts, "pending": sum(1 for r in runs if r["status"] in ("pending", "running"))}


def _over_before(context: NodeContext, start: int, count: int) -> int:
    """How many leading ids have runs that are over (or no id at all), looking from `start` on,
    a chunk at a time, until a run that is not over."""
    records = context.store.wait_records
    while start < count:
        chunk: list[str | None] = records.items(
            context.run_id, context.node_id, start, min(count, start + ITEMS_PER_CHUNK)
        )
        query = {"_id": {"$in": [i for i in chunk if i]}, "status": {"$in": list(RUN_OVER)}}
        over = {d["_id"] for d in context.store.runs.find(query, {"_id": 1})}
        for run_id in chunk:
            if run_id and run_id not in over:
                return start
            start += 1
    return start


def _upgraded(data: Mapping[str, Any], context: NodeContext) -> Mapping[str, Any]:
    """A wait record's data; one of the earlier version (the ids in it) is upgraded once."""
    if "run_ids" not in data:
        return data
    run_ids = data["run_ids"]
    context.store.wait_records.put_items(context.run_id, context.node_id, run_ids)
    upgraded = {"count": len(run_ids), "over_before": 0, "timeout_s": data["timeout_s"]}
    context.store.wait_records.set_data(context.run_id, context.node_id, upgraded)
    return upgraded


def _line(run_id: str | None, doc: Mapping[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        return {
            "run_id": run_id,
            "status": "missing",
            "workflow": None,
            "results": None,
            "error": "no such run",
        }
    return {
        "run_id": run_id,
        "status": doc["status"],
        "workflow": doc.get("workflow"),
        "results": doc.get("results"),
        "error": doc.get("error"),
    }


node_type = NodeType(
    name="collect",
    params=CollectParams,
    run=run,
    resume=resume,
    description="waits for runs started elsewhere (fire-and-forget children) and gathers their results",
)
