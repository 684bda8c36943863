"""Cancelling a run stops its work, not only what comes after it.

The run document is moved to `cancelled` first (a compare-and-set: nothing recorded later
changes that). Then each node of it that runs is stopped where it runs: its task, whose id
its start recorded, is revoked with `terminate` (Celery kills the pool process running it,
and every worker drops a later delivery of that message) and ends as `cancelled`, and so
does each node that waits for other runs. Child runs are cancelled with their parent (`cascade`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from orchestrator.engine.run_ends import tell_waiters
from orchestrator.store.models import node_state

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp

logger = logging.getLogger("orchestrator.engine.cancel")


def cancel_run(app: OrchestratorApp, run_id: str, cascade: bool = True) -> list[str]:
    """Cancel a run (and, with `cascade`, its active descendants) and stop their nodes; the
    ids of the runs cancelled."""
    cancelled = app.store.cancel_run(run_id, cascade=cascade)
    for cancelled_id in cancelled:
        doc = app.store.get_run_document(cancelled_id)
        stop_nodes(app, doc)
        tell_waiters(app, doc)
    return cancelled


def stop_nodes(app: OrchestratorApp, doc: dict[str, Any]) -> None:
    """Stop the running nodes of a cancelled run, and end them and its waiting ones as
    `cancelled` (a node that ended just before keeps its end)."""
    for node_id, state in doc.get("nodes", {}).items():
        status = state.get("status")
        if status not in ("running", "waiting"):
            continue
        if status == "running" and state.get("task_id"):
            # SIGTERM: the pool process running it exits, and a `python` node's code with it.
            app.control.revoke(state["task_id"], terminate=True, signal="SIGTERM")
            logger.info("run %s node %s: cancelled; stopped task %s", doc["_id"], node_id, state["task_id"])
        ended = node_state(
            status="cancelled",
            error="cancelled with its run",
            attempts=state.get("attempts", 1),
            started_at=state.get("started_at"),
        )
        if app.store.set_node_state(doc["_id"], node_id, ended, [status]) and status == "waiting":
            app.store.wait_records.close(doc["_id"], node_id)
