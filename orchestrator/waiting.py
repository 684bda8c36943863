"""Nodes that wait for another run without holding a worker slot.

A waiting node's task re-schedules itself (`Task.retry` with a countdown, which keeps its
place in its chain or chord) and polls; when the awaited run ends, its last step re-sends the
node's own message at once (the wake-up), so the wait ends within a round trip of the child
instead of a poll interval. Each message carries a fresh token; a compare-and-set on the node
(`waiting -> finished`, recording the winning token) lets exactly one execution continue the
canvas; the others raise `Ignore`. A redelivery of the winning message (same token) may go on.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Ignore

from orchestrator.constants import MAX_COUNTDOWN_S
from orchestrator.models import aware, node_state, utcnow
from orchestrator.registry import NodeContext, NodeType, Wait
from orchestrator.spec import NodeSpec

if TYPE_CHECKING:
    from orchestrator.app import OrchestratorApp


def new_token() -> str:
    """A token unique to one message of a waiting node."""
    return uuid.uuid4().hex


def begin_wait(
    task: Task, node_type: NodeType[Any], spec: NodeSpec, context: NodeContext, wait: Wait
) -> None:
    """Mark the node `waiting` (with what a wake-up needs to re-send it), then poll once."""
    started = utcnow()
    state = node_state(status="waiting", attempts=context.attempt, started_at=started, finished_at=None)
    wait_record = {
        "run_id": wait.run_id,
        "since": started,
        "deadline": started + timedelta(seconds=wait.timeout_s),
        "poll_interval_s": wait.poll_interval_s,
        "data": wait.data,
        "resend": dict(task.signature_from_request()),
        "woken": False,
    }
    context.store.set_waiting(context.run_id, spec.id, state, wait_record)
    poll(task, node_type, spec, context, state, wait_record)


def poll(
    task: Task,
    node_type: NodeType[Any],
    spec: NodeSpec,
    context: NodeContext,
    state: dict[str, Any],
    wait: dict[str, Any],
) -> None:
    """Ask the node type whether the wait is over; claim the node, or poll again later.

    Raises:
        Retry: the wait goes on (the task comes back after the poll interval).
        Ignore: another execution claimed the node first.
    """
    assert node_type.resume is not None, f"node type {node_type.name} returned Wait but has no resume"
    deadline = aware(wait["deadline"])
    output = node_type.resume(wait, context, utcnow() >= deadline)
    if output is None:
        left = (deadline - utcnow()).total_seconds()
        countdown = max(min(float(wait["poll_interval_s"]), left, MAX_COUNTDOWN_S), 0.01)
        kwargs = {**task.request.kwargs, "token": new_token()}
        raise task.retry(countdown=countdown, kwargs=kwargs, max_retries=None)
    token = task.request.kwargs.get("token")
    done = node_state(
        status="finished", output=output, attempts=state.get("attempts", 1), started_at=aware(wait["since"])
    )
    done["claim_token"] = token
    if not context.store.set_node_state(context.run_id, spec.id, done, ["waiting"]):
        raise Ignore()


def after_claim(token: str | None, state: dict[str, Any]) -> bool:
    """For a message of a node that is over: whether it may let the canvas go on.

    Nodes that waited record the token that claimed them: only that message (or a
    redelivery of it) continues; a late poll or wake-up must stop.
    """
    return "claim_token" not in state or state["claim_token"] == token


def wake_parent(app: OrchestratorApp, run_doc: dict[str, Any]) -> bool:
    """When a run ends, re-send the message of the parent node waiting for it, once."""
    parent_id, node_id = run_doc.get("parent_run_id"), run_doc.get("parent_node_id")
    if not parent_id or not node_id:
        return False
    parent = app.store.mark_woken(parent_id, node_id, run_doc["_id"])
    if parent is None:
        return False
    resend = app.signature(parent["waits"][node_id]["resend"])
    resend.kwargs = {**resend.kwargs, "token": new_token()}
    resend.apply_async()
    return True
