"""The reconciler: the run document, not the broker, drives every active run to its end.

A run's progress travels as Celery messages; a message can be lost (a worker SIGKILLed
between taking it from Redis and recording it, a Redis restarted without persistence, a
worker that dies holding it until the visibility timeout). Run periodically (by
`orchestrator beat`, every `ORCH_SWEEP_S`; any number at once is safe), the reconciler reads
each active run and sends again what its document shows is missing:

* a node still `running` past its lease (`orchestrator.engine.leases`) lost its worker: it is run
  again, its attempts counted (a type that says it must not be re-run blindly fails instead);
* a run with no message on the broker for its current epoch, nothing running and nothing
  waiting, for `ORCH_STALL_S`: its next nodes' messages (or its end's) were lost.

Either way it bumps the run's epoch (a compare-and-set: one reconciler wins) and sends the
rest of the run, the nodes that are not over, as a new canvas of the new epoch. Messages of
older epochs start nothing from then on, so a message thought lost that turns up later
changes nothing. Waiting nodes and runs never sent are the sweeper's (`orchestrator.engine.waiting`,
`orchestrator.engine.launcher`), which this pass runs too.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.constants import NODE_OVER
from orchestrator.engine.broker_scan import runs_with_messages
from orchestrator.engine.compiler import compile_workflow
from orchestrator.engine.run_ends import tell_waiters
from orchestrator.errors import WorkflowNotFound
from orchestrator.store.models import aware, node_state

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp

logger = logging.getLogger("orchestrator.engine.reconciler")

_FIELDS = ("status", "workflow", "spec_digest", "nodes", "epoch", "created_at", "dispatched_at", "started_at")


def reconcile(app: OrchestratorApp, now: float | None = None) -> list[str]:
    """Send again the rest of every active run that stalled; the ids of those sent."""
    now = time.time() if now is None else now
    on_broker = runs_with_messages(app.backend.client)
    resumed = []
    for doc in app.store.active_runs(_FIELDS):
        reason = stall_reason(doc, now, app.settings.stall_s, on_broker)
        if reason is not None and resume(app, doc, reason):
            resumed.append(doc["_id"])
    return resumed


def stall_reason(
    doc: dict[str, Any], now: float, stall_s: float, on_broker: set[tuple[str, int]]
) -> str | None:
    """Why the run needs the rest of it sent again, or None while it is moving."""
    if doc.get("dispatched_at") is None:
        return None  # never sent: the launcher's sweep sends it
    nodes: dict[str, dict[str, Any]] = doc.get("nodes", {})
    lost = [n for n, s in nodes.items() if s.get("status") == "running" and _expired(s, now)]
    if lost:
        return f"its worker was lost while it ran {', '.join(repr(n) for n in lost)} (lease expired)"
    if (doc["_id"], doc.get("epoch", 0)) in on_broker:
        return None
    if any(s.get("status") in ("running", "waiting") for s in nodes.values()):
        return None  # running under a live lease, or waiting (polls are the sweeper's)
    quiet_s = now - _last_move(doc)
    if quiet_s < stall_s:
        return None
    return f"no message on the broker and nothing running for {quiet_s:.0f} s"


def _expired(state: dict[str, Any], now: float) -> bool:
    lease = state.get("lease_until")
    return isinstance(lease, int | float) and lease < now


def _last_move(doc: dict[str, Any]) -> float:
    """When the run last changed: its dispatch, its start, or a node's end (epoch seconds)."""
    times = [doc.get("dispatched_at"), doc.get("started_at")]
    times += [s.get("finished_at") for s in doc.get("nodes", {}).values()]
    return max(aware(t).timestamp() for t in times if isinstance(t, datetime))


def resume(app: OrchestratorApp, doc: dict[str, Any], reason: str) -> bool:
    """Bump the run's epoch and send the nodes that are not over as a new canvas; True when
    this call did (another reconciler may have been first)."""
    run_id, name = doc["_id"], doc["workflow"]
    try:
        spec = app.specs.of_run(doc)  # the version the run started with
    except WorkflowNotFound:
        return _give_up(app, run_id, f"{reason}, and workflow '{name}' was removed: it cannot go on")
    if {n.id for n in spec.nodes} != set(doc.get("nodes", {})):
        return _give_up(app, run_id, f"{reason}, and workflow '{name}' changed its nodes: it cannot go on")
    epoch = doc.get("epoch", 0)
    if not app.store.bump_epoch(run_id, epoch):
        return False
    _fail_lost_unsafe_nodes(app, doc, spec.nodes)
    nodes = app.store.get_run_document(run_id)["nodes"]
    remaining = [n for n, s in nodes.items() if s.get("status") not in NODE_OVER]
    handed = app.registry.handed_types({n.type for n in spec.nodes})
    canvas = compile_workflow(app, spec, run_id, handed, epoch=epoch + 1, remaining=remaining)
    tried = {n: int(s.get("attempts") or 0) for n, s in nodes.items() if n in remaining}
    _count_attempts(canvas, tried)
    logger.warning(
        "run %s of '%s': %s; sending its %d remaining nodes again", run_id, name, reason, len(remaining)
    )
    try:
        canvas.apply_async()
    except Exception as exc:  # the broker is away: the next pass tries again, with the next epoch
        logger.error("run %s: could not send the rest of it: %s", run_id, exc)
        return False
    return True


def _fail_lost_unsafe_nodes(app: OrchestratorApp, doc: dict[str, Any], specs: Any) -> None:
    """A lost node whose type must not be re-run blindly fails instead (its effect may have
    happened): the run goes on, and may handle the failure."""
    types = {n.id: n.type for n in specs}
    now = time.time()
    for node_id, state in doc.get("nodes", {}).items():
        if state.get("status") != "running" or not _expired(state, now):
            continue
        if app.registry.get(types[node_id]).rerun_safe:
            continue
        message = (
            f"its worker ({state.get('worker') or 'unknown'}) was lost while it ran, and node type "
            f"'{types[node_id]}' is not run again blindly: see whether its effect happened"
        )
        failed = node_state(status="failed", error=message, attempts=state.get("attempts", 1))
        app.store.set_node_state(doc["_id"], node_id, failed, ["running"])


def _count_attempts(canvas: Any, tried: dict[str, int]) -> None:
    """Tell each node message how many attempts its node had, so that attempts keep counting."""
    stack = [canvas]
    while stack:
        sig = stack.pop()
        stack.extend(getattr(sig, "tasks", None) or [])
        body = getattr(sig, "body", None)
        if body is not None:
            stack.append(body)
        node = (getattr(sig, "kwargs", None) or {}).get("node")
        if isinstance(node, dict) and tried.get(node.get("id", "")):
            sig.kwargs["tried"] = tried[node["id"]]


def _give_up(app: OrchestratorApp, run_id: str, message: str) -> bool:
    logger.error("run %s: %s", run_id, message)
    ended = app.store.end_run(run_id, "error", error=message)
    if ended is not None:
        tell_waiters(app, ended)
    return False
