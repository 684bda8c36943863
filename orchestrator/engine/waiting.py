"""Nodes that wait for other runs without holding a worker slot.

A waiting node's task re-schedules itself (`Task.retry` with a countdown, which keeps its
place in its chain or chord) and polls. When an awaited run ends, its last step re-sends the
node's own message at once (the wake-up), so the wait ends within a round trip of the child
instead of a poll interval.

Two compare-and-sets keep this exact:

* **One live poll.** The wait record (`orchestrator.store.wait_records`) holds the token of
  the one message that may poll. A poll first passes the token on to the message it will send next; a wake-up
  replaces it. A message whose token is no longer current stops (`Ignore`), so wake-ups never
  multiply the messages in flight. At most one wake-up is in flight (`woken`).
* **One continuation.** Ending the wait is `waiting -> finished` (or `failed`), recording the
  claiming message's token; only that message, or a redelivery of it, lets the canvas go on.

A message lost with a killed worker leaves a wait whose next poll is overdue; `sweep_waits`
(run periodically by `orchestrator beat`) re-sends it.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Ignore

from orchestrator.constants import MAX_COUNTDOWN_S
from orchestrator.definitions.spec import NodeSpec
from orchestrator.engine.registry import NodeContext, NodeType, Wait
from orchestrator.engine.task_events import same_reprs
from orchestrator.errors import NodeError
from orchestrator.store.models import aware, node_state, utcnow

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp

logger = logging.getLogger("orchestrator.engine.waiting")


def new_token() -> str:
    """A token unique to one message of a waiting node."""
    return uuid.uuid4().hex


def wait_record(task: Task, context: NodeContext, wait: Wait) -> dict[str, Any]:
    """What a waiting node keeps in its wait record: what it waits for, how long, and what a
    wake-up needs to re-send its message.

    Raises:
        DocumentTooLarge: the record would pass the size budget.
    """
    started = utcnow()
    record = {
        "run_id": wait.run_id,
        "since": started,
        "deadline": started + timedelta(seconds=wait.timeout_s),
        "poll_interval_s": wait.poll_interval_s,
        "data": wait.data,
        "resend": dict(task.signature_from_request().set(**same_reprs(task))),
        "token": new_token(),
        "woken": False,
        "next_poll_at": time.time(),
        "epoch": task.request.kwargs.get("epoch", 0),
    }
    context.store.wait_records.check_size(context.node_id, record)
    return record


def begin_wait(
    task: Task, node_type: NodeType[Any], spec: NodeSpec, context: NodeContext, record: dict[str, Any]
) -> None:
    """Mark the node `waiting` with its wait record (`wait_record`), then poll once."""
    state = node_state(
        status="waiting", attempts=context.attempt, started_at=record["since"], finished_at=None
    )
    context.store.set_waiting(context.run_id, spec.id, state, record)
    poll(task, node_type, spec, context, state, record, held_token=record["token"])


def poll(
    task: Task,
    node_type: NodeType[Any],
    spec: NodeSpec,
    context: NodeContext,
    state: dict[str, Any],
    wait: dict[str, Any],
    held_token: str | None,
) -> None:
    """Ask the node type whether the wait is over; claim the node, or poll again later.

    Args:
        held_token: the poll token this execution holds (its message's, or the one
            `begin_wait` just stored).

    Raises:
        Retry: the wait goes on (the task comes back after the poll interval).
        Ignore: this message was superseded, or another one claimed the node first.
    """
    assert node_type.resume is not None, f"node type {node_type.name} returned Wait but has no resume"
    deadline = aware(wait["deadline"])
    interval = float(wait["poll_interval_s"])
    countdown = max(min(interval, (deadline - utcnow()).total_seconds(), MAX_COUNTDOWN_S), 0.01)
    next_token = new_token()
    # Pass the token on before looking: a run that ends from now on wakes the next message.
    if not context.store.wait_records.pass_token(
        context.run_id, spec.id, held_token, next_token, time.time() + countdown
    ):
        raise Ignore()
    try:
        output = node_type.resume(wait, context, utcnow() >= deadline)
    except NodeError as exc:
        _claim(task, spec, context, node_state(status="failed", error=str(exc)), state, wait)
        return
    if output is None:
        kwargs = {**task.request.kwargs, "token": next_token}
        raise task.retry(countdown=countdown, kwargs=kwargs, max_retries=None, **same_reprs(task))
    _claim(task, spec, context, node_state(status="finished", output=output), state, wait)


def take_over_wait(
    task: Task, spec: NodeSpec, context: NodeContext, epoch: int
) -> tuple[dict[str, Any], str]:
    """Make this message (of the run's current `epoch`, sent by the reconciler) the one that
    polls a waiting node and that a wake-up re-sends: the wait record's message belongs to an
    older epoch, whose canvas no longer goes on.

    Returns:
        The wait record and the poll token this message now holds.

    Raises:
        Ignore: another message of this epoch took the wait over first.
    """
    token = new_token()
    wait = context.store.wait_records.take_over(
        context.run_id, spec.id, epoch, dict(task.signature_from_request().set(**same_reprs(task))), token
    )
    if wait is None:
        raise Ignore()
    return wait, token


def _claim(
    task: Task,
    spec: NodeSpec,
    context: NodeContext,
    end: dict[str, Any],
    state: dict[str, Any],
    wait: dict[str, Any],
) -> None:
    """End the wait with `end` (`waiting -> finished|failed`), or stop if another message did."""
    end.update(attempts=state.get("attempts", 1), started_at=aware(wait["since"]))
    end["claim_token"] = task.request.kwargs.get("token")
    if not context.store.set_node_state(context.run_id, spec.id, end, ["waiting"]):
        raise Ignore()
    context.store.wait_records.close(context.run_id, spec.id)


def after_claim(token: str | None, state: dict[str, Any]) -> bool:
    """For a message of a node that is over: whether it may let the canvas go on.

    Nodes that waited record the token that claimed them: only that message (or a
    redelivery of it) continues; a late poll or wake-up must stop.
    """
    return "claim_token" not in state or state["claim_token"] == token


def wake_parent(app: OrchestratorApp, run_doc: dict[str, Any]) -> bool:
    """When a run ends, re-send at once the message of the parent node waiting for it."""
    parent_id, node_id = run_doc.get("parent_run_id"), run_doc.get("parent_node_id")
    if not parent_id or not node_id or run_doc.get("trigger", {}).get("mode") == "fire_and_forget":
        return False  # nobody waits for a fire-and-forget child: spare the round trip
    return wake(app, parent_id, node_id)


def wake(app: OrchestratorApp, run_id: str, node_id: str, overdue_before: float | None = None) -> bool:
    """Re-send a waiting node's message with a fresh token (unless a wake-up is in flight).

    Args:
        overdue_before: wake only when the node's next poll was due before this time (the
            sweeper's case: its message was lost), even if a wake-up seems in flight.
    """
    token = new_token()
    record = app.store.wait_records.take_token(run_id, node_id, token, overdue_before)
    if record is None:
        return False
    resend = app.signature(record["resend"])
    resend.kwargs = {**resend.kwargs, "token": token}
    resend.apply_async()
    return True


def sweep_waits(app: OrchestratorApp, grace_s: float = 30.0) -> list[str]:
    """Re-send waiting nodes whose poll is overdue by more than `grace_s` (a lost message).

    Returns:
        `run_id/node_id` of each node woken.
    """
    woken = []
    before = time.time() - grace_s
    for run_id, node_id in app.store.overdue_waits(before):
        if wake(app, run_id, node_id, overdue_before=before):
            logger.warning("run %s node %s: its poll was overdue; re-sent it", run_id, node_id)
            woken.append(f"{run_id}/{node_id}")
    return woken
