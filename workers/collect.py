"""`collect`: wait for runs started elsewhere (fire-and-forget children) and gather their results.

The collector of a fire-and-forget fan-out: given run ids, it waits (holding no worker slot)
until every one is over or `timeout_s` passes, then returns one line per run in the order
given. The runs are not its own children, so no wake-up reaches it: it polls every
`poll_interval_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.constants import RUN_OVER
from orchestrator.engine.registry import NodeContext, NodeType, Wait


class CollectParams(BaseModel):
    """The runs to wait for, and how long."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[str | None]
    timeout_s: float = Field(300, gt=0, le=30 * 86400)
    poll_interval_s: float = Field(0.5, ge=0.05, le=600)


def run(params: CollectParams, context: NodeContext) -> Wait:
    """Wait for the runs (ids that are null, from children that never started, are reported as such)."""
    data = {"run_ids": params.run_ids, "timeout_s": params.timeout_s}
    return Wait(run_id=None, timeout_s=params.timeout_s, poll_interval_s=params.poll_interval_s, data=data)


def resume(wait: Mapping[str, Any], context: NodeContext, timed_out: bool) -> dict[str, Any] | None:
    """`{runs: [...], finished, failed, pending}` once every run is over, or at the timeout."""
    run_ids: list[str | None] = wait["data"]["run_ids"]
    wanted = [run_id for run_id in run_ids if run_id]
    query = {"_id": {"$in": wanted}}
    if not timed_out:  # while waiting, the server counts the runs over: one number comes back
        over = context.store.runs.count_documents({**query, "status": {"$in": list(RUN_OVER)}})
        if over < len(set(wanted)):
            return None
    docs = {d["_id"]: d for d in context.store.runs.find(query)}
    runs = [_line(run_id, docs.get(run_id) if run_id else None) for run_id in run_ids]
    counts = {key: sum(1 for r in runs if r["status"] == key) for key in ("finished", "failed")}
    return {"runs": runs, **counts, "pending": sum(1 for r in runs if r["status"] in ("pending", "running"))}


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
