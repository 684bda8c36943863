"""The Celery tasks that run nodes, end runs and record engine faults.

A node task never raises for a node's own failure: it records the failure in the run
document and returns, so chains and chords go on and the run's last step decides its
status: the task of the run's last node, or a finalize task after parallel work.
Retries (`retry:` in the node spec) use `self.retry`, which keeps the node's place in its
chain or chord. Every state change goes through the store's compare-and-set, so a
redelivered message finds its node over and only lets the canvas go on.
A node right after another in a chain runs from the snapshot of the run document that node
handed on (`orchestrator.store.handoff`) instead of reading it; pure nodes (`NodeType.pure`) also
skip their start: recorded once, at their end.
"""

from __future__ import annotations

import logging
import traceback as tb
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import bson
from celery import Task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded
from celery.signals import after_setup_logger, after_setup_task_logger, task_prerun, worker_init
from pydantic import JsonValue, TypeAdapter, ValidationError

from orchestrator.constants import (
    CONTINUE_TASK,
    FINALIZE_TASK,
    JOIN_TASK,
    MAX_COUNTDOWN_S,
    NODE_STARTABLE,
    NODE_TASK_PREFIX,
    OUTAGE_MAX_BACKOFF_S,
    RUN_ACTIVE,
    SWEEP_TASK,
    RunStatus,
)
from orchestrator.definitions.spec import NodeSpec
from orchestrator.definitions.templating import build_scope, render
from orchestrator.engine.launcher import relaunch_undispatched
from orchestrator.engine.leases import holder_name
from orchestrator.engine.log_capture import RunNodeFilter
from orchestrator.engine.outages import service_error
from orchestrator.engine.outcome import dependency_verdict, finished_outputs, run_outcome
from orchestrator.engine.registry import AfterEnd, NodeContext, NodeType, Registry, Wait
from orchestrator.engine.run_ends import tell_waiters
from orchestrator.engine.segments import cut, hand_over, tail_from
from orchestrator.engine.task_events import FAILED_RESULT, NodeTaskLines, report_failed_node, same_reprs
from orchestrator.engine.waiting import (
    after_claim,
    begin_wait,
    poll,
    sweep_waits,
    take_over_wait,
    wait_record,
)
from orchestrator.errors import DocumentTooLarge, NodeError, NodeTimeout, TemplateError
from orchestrator.store.handoff import document_size, hand_on_budget, snapshot_after, snapshot_of
from orchestrator.store.models import node_state, utcnow
from orchestrator.store.run_store import NodeStart

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp
    from orchestrator.store.run_store import RunStore

CONTINUE_RETRIES = 20  # a continuation retries this often while MongoDB does not answer
logger = logging.getLogger("orchestrator.engine.tasks")
_JSON = TypeAdapter(JsonValue)


class NodeTask(Task):  # type: ignore[misc]
    """Base of every `workers.<type>` task: retries are the engine's, never Celery's default."""

    Request = "orchestrator.engine.task_events:NodeRequest"  # a failed node shows as failed in Flower
    max_retries = None
    acks_late = True
    ignore_result = True  # the run document is the record: no Celery result to store per node
    typing = False
    # What the worker's log and Flower show of a node's return value, the snapshot it hands
    # on: its first characters (the run id), not the run's variables and outputs.
    resultrepr_maxsize = 48

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """An exception escaped the node. A service that did not answer for longer than the
        outage retries pause: the run is left to the reconciler, which sends what is missing
        once the run document shows it stalled. Anything else is an engine fault (a bug): the
        run ends as `error`."""
        run_id = (kwargs or {}).get("run_id")
        if not isinstance(run_id, str):
            return
        if service_error(exc, self.app.settings) is not None:
            logger.error("run %s: %s: %s; the reconciler will take the run on", run_id, self.name, exc)
            return
        record_engine_fault(self.app, run_id, self.name, exc)


def register_tasks(app: OrchestratorApp) -> None:
    """Register one `workers.<type>` task per node type, and the engine's own tasks.

    Node tasks are registered by type name: a type's module is imported when one of its
    nodes first runs (`Registry.get`), or when a worker starts (`_import_node_types`), never
    when the app is built.
    """
    for type_name in app.registry.names():
        _register_node_task(app, type_name)
    worker_init.connect(_import_node_types, dispatch_uid="orchestrator.import_node_types")

    task_lines = NodeTaskLines()
    task_prerun.connect(task_lines.remember, weak=False, dispatch_uid=f"orchestrator.task-lines.{id(app)}")

    def mask_secrets_in_logs(logger: logging.Logger | None = None, **kwargs: Any) -> None:
        """Worker log lines say which run and node they are about, and show no secret."""
        for handler in (logger or logging.getLogger()).handlers:
            handler.addFilter(RunNodeFilter(app.node_log_capture))
            handler.addFilter(task_lines)
            handler.addFilter(app.secret_mask.log_filter())

    after_setup_logger.connect(mask_secrets_in_logs, weak=False, dispatch_uid=f"orchestrator.mask.{id(app)}")
    after_setup_task_logger.connect(
        mask_secrets_in_logs, weak=False, dispatch_uid=f"orchestrator.mask-task.{id(app)}"
    )

    @app.task(name=FINALIZE_TASK, bind=True, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def finalize_run(
        self: Task, run_id: str, output: Any = None, final_nodes: list[str] | None = None
    ) -> str | None:
        """The run's end after parallel work. Its output and final nodes come from the run's
        workflow version (messages sent by earlier versions carry them)."""
        if not isinstance(run_id, str):
            raise Ignore()
        return end_run(self.app, run_id, output, final_nodes)

    @app.task(name=CONTINUE_TASK, bind=True, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def continue_chain(
        self: Task, previous: Any = None, *, run_id: str, digest: str, from_node: str, epoch: int = 0
    ) -> None:
        """Replace this message with the rest of its chain, from the step that starts with
        `from_node` (`orchestrator.engine.segments`)."""
        if not all(isinstance(value, str) for value in (run_id, digest, from_node)):
            raise Ignore()
        try:
            canvas = self.app.chain_tails.canvas(run_id, digest, epoch)
        except Exception as exc:
            if service_error(exc, self.app.settings) is not None and self.request.retries < CONTINUE_RETRIES:
                delay = min(2.0**self.request.retries, OUTAGE_MAX_BACKOFF_S)
                raise self.retry(countdown=delay, exc=exc, max_retries=None, **same_reprs(self)) from exc
            raise
        rest = tail_from(canvas, from_node)
        if rest is None:  # not a canvas this version compiles to: the reconciler takes the run on
            logger.error("run %s: no chain goes on from node '%s' in version %s", run_id, from_node, digest)
            raise Ignore()
        raise self.replace(cut(self.app, hand_over(rest, previous), run_id, digest, epoch))

    @app.task(name=JOIN_TASK, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def join() -> None:
        """A no-op step that closes a fan-out inside a larger fan-in."""

    @app.task(name=SWEEP_TASK, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def sweep(grace_s: float = 30.0) -> list[str]:
        """Re-send what was lost (run every `ORCH_SWEEP_S` by `orchestrator beat`): the polls
        of waiting nodes, the canvases of runs that never reached the broker, and the rest of
        runs that stalled (`orchestrator.engine.reconciler`)."""
        from orchestrator.engine.reconciler import reconcile

        return sweep_waits(app, grace_s) + relaunch_undispatched(app, grace_s) + reconcile(app)


def _import_node_types(sender: Any = None, **kwargs: Any) -> None:
    """At a worker's start, before its pool forks: import every node type and the libraries
    it uses, so that the processes share them and no node's first run pays for them (nor
    counts them against its `timeout_s`). Connected to Celery's `worker_init` signal."""
    registry = getattr(getattr(sender, "app", None), "registry", None)
    if isinstance(registry, Registry):  # a worker of an orchestrator app
        registry.import_all()


def _register_node_task(app: OrchestratorApp, type_name: str) -> None:
    @app.task(name=NODE_TASK_PREFIX + type_name, base=NodeTask, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def node_task(
        self: NodeTask,
        previous: Any = None,
        *,
        run_id: str,
        node: dict[str, Any],
        token: str | None = None,
        final: dict[str, Any] | None = None,
        first: bool = False,
        hand_on: bool | list[str] = False,
        hand_to: int = 1,
        epoch: int = 0,
        outages: int = 0,
        tried: int = 0,
        reads: list[str] | None = None,
    ) -> str | None:
        if not isinstance(run_id, str) or not isinstance(node, dict):
            logger.error("%s: dropped a message whose run id or node is malformed", self.name)
            raise Ignore()
        node_type = self.app.registry.get(type_name)
        spec = NodeSpec.model_validate(node)
        if reads is not None and not _names(reads):
            reads = None  # a malformed list: read the whole document
        if not isinstance(hand_on, bool) and not _names(hand_on):
            hand_on = False  # a malformed list: hand nothing on
        hand_to = hand_to if isinstance(hand_to, int) and hand_to > 0 else 1
        message = NodeMessage(token, first, final, previous, hand_on, epoch, outages, tried, reads, hand_to)
        try:
            end = run_node(self, node_type, run_id, spec, message)
            if final is not None and not end.run_ended:  # a wait or a redelivery ended it: end the run now
                end_run(self.app, run_id, final.get("output"), final.get("final_nodes") or [])
        except (Retry, Ignore):
            raise
        except Exception as exc:
            _retry_after_outage(self, exc, outages)
            raise
        if end.failure is not None:
            report_failed_node(self, *end.failure)
            return FAILED_RESULT
        return end.handed_on


def _names(value: object) -> bool:
    """Whether a message's list of node ids is one."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _retry_after_outage(task: NodeTask, exc: Exception, outages: int) -> None:
    """When MongoDB or Redis did not answer, retry the message later (with backoff, for up to
    `ORCH_OUTAGE_RETRY_S`) instead of failing the run: an outage pauses a run. Past that, or
    when Redis cannot take the retry either, the run is left to the reconciler."""
    settings = task.app.settings
    if service_error(exc, settings) is None:
        return
    delay = min(2.0**outages, OUTAGE_MAX_BACKOFF_S)
    if sum(min(2.0**n, OUTAGE_MAX_BACKOFF_S) for n in range(outages + 1)) > settings.outage_retry_s:
        return
    logger.warning("%s: %s; trying again in %.0f s", task.request.kwargsrepr or task.name, exc, delay)
    kwargs = {**task.request.kwargs, "outages": outages + 1}
    raise task.retry(countdown=delay, kwargs=kwargs, exc=exc, **same_reprs(task))


@dataclass(frozen=True)
class NodeMessage:
    """What a node's message carries besides the node: where it stands in its canvas."""

    token: str | None = None
    """The poll token of a waiting node's message (a poll or a wake-up)."""
    first: bool = False
    """The node is the run's only source: its start starts the run."""
    final: dict[str, Any] | None = None
    """The node is the run's last: the run's `output` and final nodes, to end the run in the
    same update that records the node's end."""
    previous: Any = None
    """What the chain's previous task returned: a snapshot of the run document after that
    node, when it handed one on (`orchestrator.store.handoff`)."""
    hand_on: bool | list[str] = False
    """The chain's next task is a node that does not wait: hand it a snapshot (in a wide
    workflow, of the nodes in this list only)."""
    epoch: int = 0
    """The run's epoch the message belongs to; a message of an older epoch starts nothing."""
    outages: int = 0
    """How many times the message was retried because a service did not answer."""
    tried: int = 0
    """Attempts the node had before the reconciler sent it again (its worker was lost)."""
    reads: list[str] | None = None
    """In a wide workflow: the nodes whose states this node reads (`compiler.node_reads`);
    None: the whole run document."""
    hand_to: int = 1
    """How many nodes take what this node hands on (the nodes parallel work after it starts
    with): they share the budget of one hand-on."""

    @property
    def attempt_base(self) -> int:
        """What to add to the message's retries to count the node's attempts."""
        return self.tried - self.outages


@dataclass(frozen=True)
class NodeEnd:
    """What one node message leaves behind for the rest of its canvas."""

    run_ended: bool = False
    """This message also ended the run (the run's last node)."""
    handed_on: str | None = None
    """For the chain's next node: a snapshot of the run document as the node's end left it."""
    failure: tuple[str, str | None] | None = None
    """The node failed: its error and traceback, for the task's `task-failed` event."""


def run_node(
    task: NodeTask, node_type: NodeType[Any], run_id: str, spec: NodeSpec, message: NodeMessage
) -> NodeEnd:
    """Run one node of a run, once: start it, check its dependencies, render, call, record.

    A node that does not wait runs from the snapshot the node before it handed on, when
    there is one, instead of reading the document. Its start takes a lease, which this
    process renews while the node's function runs (`orchestrator.engine.leases`).

    Returns when the node is over and this message may let the canvas go on; raises `Retry`
    while the node retries or waits, and `Ignore` when another message goes on.
    A pure node (`NodeType.pure`) is not marked running: it is recorded once, at its end,
    and only while the run is active.
    """
    store: RunStore = task.app.store
    token, final, epoch = message.token, message.final, message.epoch
    attempt = task.request.retries + 1 + message.attempt_base
    pure = node_type.pure_for(spec.params) and token is None
    handed = _handed_doc(node_type, run_id, spec, message)
    start = NodeStart(attempt, epoch, task.app.leases.lease_until(), holder_name(), task.request.id)
    before, run_was = _start(store, run_id, spec.id, start, pure, handed, message)
    if before is None:
        _not_started(task, node_type, run_id, spec, message)
        return NodeEnd()
    started_doc = before
    effects: AfterEnd | None = None  # what the node does once its end is recorded

    def record(state: dict[str, Any], doc_size: int = 0) -> NodeEnd:
        state = _masked(task.app, state)
        if final is not None:
            ended = _end_node_and_run(
                task.app, started_doc, spec.id, state, final, doc_size, run_was, epoch, message.first
            )
            if ended:
                _settle(task.app, run_id, spec.id, effects, recorded=True)
                return NodeEnd(run_ended=True, failure=_failure_of(state))
            # The run is over (cancelled): a started node still records its end.
            recorded = not pure and store.end_node(run_id, spec.id, state, doc_size)
        else:
            recorded = store.end_node(
                run_id, spec.id, state, doc_size, run_was=run_was, epoch=epoch, first=message.first
            )
        _settle(task.app, run_id, spec.id, effects, recorded)
        if pure and not recorded:  # the run ended meanwhile, or another message recorded the node
            _not_started(task, node_type, run_id, spec, message)
        if not recorded:
            return NodeEnd()
        keep = message.hand_on if isinstance(message.hand_on, list) else None
        snapshot = (
            snapshot_after(started_doc, spec.id, state, doc_size, keep, hand_on_budget(message.hand_to))
            if message.hand_on
            else None
        )
        return NodeEnd(handed_on=snapshot, failure=_failure_of(state))

    skip_reason = dependency_verdict(spec, before.get("nodes", {}))
    if skip_reason:
        return record(node_state(status="skipped", error=skip_reason))
    started = utcnow()
    context = _context(task, spec, before, attempt)
    outcome, output = _call_node(task, node_type, spec, context, start, started)
    if outcome == "failed":
        return record(output)
    if outcome == "waits":
        begin_wait(task, node_type, spec, context, output)
        return NodeEnd()
    if isinstance(output, AfterEnd):
        effects, output = output, output.output
    state = node_state(status="finished", output=output, attempts=attempt, started_at=started)
    # Outside the node's `try`: a store that does not answer while the end is recorded is an
    # outage (the message is retried, `_retry_after_outage`), not the node's failure.
    try:
        return record(state, doc_size=document_size(before))
    except DocumentTooLarge as exc:
        _drop(run_id, spec.id, effects)  # its output is not what is recorded
        effects = None
        return record(_failure(exc, attempt, started, with_traceback=False))


def _call_node(
    task: NodeTask,
    node_type: NodeType[Any],
    spec: NodeSpec,
    context: NodeContext,
    start: NodeStart,
    started: datetime,
) -> tuple[Literal["output", "waits", "failed"], Any]:
    """Call the node's function, holding its lease and capturing its log: its output, the
    record of its wait, or (when it raised and has no retry left) its failed state."""
    run_id, attempt = context.run_id, start.attempt
    capture = task.app.node_log_capture
    try:
        with task.app.leases.holding(run_id, spec.id, attempt), capture.capturing(run_id, spec.id, attempt):
            output = _call(node_type, spec, context)
        if isinstance(output, Wait):
            return "waits", wait_record(task, context, output)
        return "output", output
    except (Retry, Ignore):  # Celery's own (a pure node whose run ended meanwhile): not a failure
        raise
    except DocumentTooLarge as exc:  # a wait record past the budget
        return "failed", _failure(exc, attempt, started, with_traceback=False)
    except Exception as exc:
        _retry_if_it_may(task, run_id, spec, exc, start, started)
        return "failed", _failure(exc, attempt, started)


def _retry_if_it_may(
    task: NodeTask, run_id: str, spec: NodeSpec, exc: Exception, start: NodeStart, started: datetime
) -> None:
    """After a failed attempt of a node with `retry:` attempts left: record it `running`
    with its error and a lease past the wait, and raise `Retry` to run it again after the
    node's backoff. Returns for a node with no attempt left: it fails."""
    attempt = start.attempt
    if not spec.retry or attempt >= spec.retry.max_attempts:
        return
    delay = min(spec.retry.delay_before(attempt + 1), MAX_COUNTDOWN_S)
    logger.warning(
        "run %s node %s attempt %d failed (%s); retry in %.1fs", run_id, spec.id, attempt, exc, delay
    )
    retrying = _failure(exc, attempt, started) | {"status": "running", "finished_at": None}
    # The retry's message is held by a worker until its countdown: lease past it.
    retrying |= replace(start, lease_until=task.app.leases.lease_until() + delay).lease()
    task.app.store.set_node_state(run_id, spec.id, retrying, NODE_STARTABLE)
    raise task.retry(countdown=delay, exc=exc, **same_reprs(task)) from exc


def _handed_doc(
    node_type: NodeType[Any], run_id: str, spec: NodeSpec, message: NodeMessage
) -> dict[str, Any] | None:
    """The run document handed to the node (by the node before it, or the run's launch),
    when it may run from one; None when it reads the document."""
    if message.token is not None or not node_type.runs_handed(spec.params):
        return None
    handed = snapshot_of(message.previous, run_id)
    if handed is not None:  # a node parallel work starts with is handed the states it reads only
        handed["nodes"].setdefault(spec.id, {"status": "pending"})
    return handed


def _start(
    store: RunStore,
    run_id: str,
    node_id: str,
    start: NodeStart,
    pure: bool,
    handed: dict[str, Any] | None,
    message: NodeMessage,
) -> tuple[dict[str, Any] | None, RunStatus | None]:
    """Start a node: the run document it starts from (None when it must not start) and, for a
    pure node (not marked running), the run's status then."""
    if pure:
        before = _pure_start(store, run_id, node_id, handed, start.epoch, message.reads)
        return before, before["status"] if before else None
    if handed is not None:
        marked = store.mark_node_running(run_id, node_id, start, handed["status"], message.first)
        return (handed if marked else None), None
    return store.start_node(run_id, node_id, start, first=message.first, reads=message.reads), None


def _with_own(reads: list[str] | None, node_id: str) -> list[str] | None:
    return None if reads is None else sorted({*reads, node_id})


def _failure_of(state: dict[str, Any]) -> tuple[str, str | None] | None:
    """A failed node's error and traceback, for its task's `task-failed` event."""
    if state["status"] != "failed":
        return None
    return state.get("error") or "failed", state.get("traceback")


def _masked(app: OrchestratorApp, state: dict[str, Any]) -> dict[str, Any]:
    """A node's end with the secrets the worker holds masked in its output and messages."""
    mask = app.secret_mask
    return state | {
        "output": mask.json(state.get("output")),
        "error": mask.text(state["error"]) if state.get("error") else state.get("error"),
        "traceback": mask.text(state["traceback"]) if state.get("traceback") else state.get("traceback"),
    }


def _pure_start(
    store: RunStore,
    run_id: str,
    node_id: str,
    handed: dict[str, Any] | None,
    epoch: int,
    reads: list[str] | None = None,
) -> dict[str, Any] | None:
    """The document a pure node runs from: the snapshot handed on, else the run document
    read (only the nodes it `reads`, when given); None when the run is over, the node is not
    startable or the message belongs to another epoch of the run (nothing is written)."""
    doc = handed or store.read_run(run_id, reads)
    state = doc["nodes"].get(node_id)
    if doc["status"] not in RUN_ACTIVE or state is None or state["status"] not in NODE_STARTABLE:
        return None
    return doc if doc.get("epoch", 0) == epoch else None


def _end_node_and_run(
    app: OrchestratorApp,
    before: dict[str, Any],
    node_id: str,
    state: dict[str, Any],
    final: dict[str, Any],
    doc_size: int,
    run_was: RunStatus | None = None,
    epoch: int = 0,
    first: bool = True,
) -> bool:
    """Record the run's last node and end the run in one update; True when this call did.

    Every other node ended before the last one started (the canvas ends with it), so the
    document read at its start, with its own state, decides the run's outcome.
    """
    nodes = {**before.get("nodes", {}), node_id: state}
    used = (doc_size or document_size(before)) + len(bson.encode({node_id: state}))
    room = app.settings.max_run_doc_bytes - used
    outcome = run_outcome(
        {**before, "nodes": nodes}, final.get("output"), final.get("final_nodes") or [], room
    )
    ended = app.store.end_last_node(
        before["_id"],
        node_id,
        state,
        outcome.status,
        results=outcome.results,
        error=outcome.error,
        results_omitted=outcome.results_omitted,
        doc_size=doc_size,
        run_was=run_was,
        epoch=epoch,
        first=first,
    )
    if ended is None:
        return False
    tell_waiters(app, ended)
    return True


def _settle(
    app: OrchestratorApp, run_id: str, node_id: str, effects: AfterEnd | None, recorded: bool
) -> None:
    """Carry out what a node deferred to its end (`AfterEnd`): `send` when this message
    recorded the end, or another did, or the run is still going (a message of another epoch
    records it); `drop` when the run was over before the node's end was recorded.

    A failure is logged, not raised: the node's end is recorded whatever happens to its
    effect (a run left unsent is sent by the sweeper)."""
    if effects is None:
        return
    if not recorded:
        doc = app.store.read_run(run_id, [node_id])
        recorded_by_another = doc.get("nodes", {}).get(node_id, {}).get("status") == "finished"
        if doc["status"] not in RUN_ACTIVE and not recorded_by_another:
            _drop(run_id, node_id, effects)
            return
    try:
        effects.send()
    except Exception as exc:
        logger.error("run %s node %s: its effect failed after its end was recorded: %s", run_id, node_id, exc)


def _drop(run_id: str, node_id: str, effects: AfterEnd | None) -> None:
    """Undo what a node prepared for its end, which is not to be: the run was over first, or
    the end recorded is not the node's output."""
    if effects is not None:
        try:
            effects.drop()
        except Exception as exc:
            logger.error("run %s node %s: undoing what it prepared failed: %s", run_id, node_id, exc)


def _not_started(
    task: NodeTask, node_type: NodeType[Any], run_id: str, spec: NodeSpec, message: NodeMessage
) -> None:
    """A message for a node that is not startable: a poll or wake-up of a waiting node, a
    redelivery, or a message of an older epoch of the run. Stops the canvas (`Ignore`)
    unless this message may go on."""
    token = message.token
    doc = task.app.store.read_run(run_id, _with_own(message.reads, spec.id))
    if spec.id not in doc.get("nodes", {}):  # a forged or stray message: the run is left alone
        logger.error("run %s has no node %r: dropped a message for it", run_id, spec.id)
        raise Ignore()
    if doc["status"] not in ("pending", "running") or doc.get("epoch", 0) != message.epoch:
        raise Ignore()  # the run is over, or was sent again: stop this branch of the canvas here
    state = doc["nodes"][spec.id]
    if state["status"] == "waiting":
        context = _context(task, spec, doc, state.get("attempts", 1))
        wait = task.app.store.wait_records.get(run_id, spec.id)
        if wait is None:  # a run of an earlier version, whose records were in its document
            logger.error("run %s node %s waits, but its wait record is not stored", run_id, spec.id)
            raise Ignore()
        if wait.get("epoch", 0) != message.epoch:  # the run was sent again: this message takes over
            wait, token = take_over_wait(task, spec, context, message.epoch)
        return poll(task, node_type, spec, context, state, wait, held_token=token)
    if not after_claim(token, state):
        raise Ignore()  # a late poll or wake-up of a node that another message continued
    return None  # a redelivered message: the node is over, let the canvas go on


def _context(task: NodeTask, spec: NodeSpec, doc: dict[str, Any], attempt: int) -> NodeContext:
    deadline = datetime.now(UTC) + timedelta(seconds=spec.timeout_s) if spec.timeout_s else None
    return NodeContext(
        run_id=doc["_id"],
        workflow=doc["workflow"],
        node_id=spec.id,
        attempt=attempt,
        variables=doc.get("variables", {}),
        outputs=finished_outputs(doc),
        store=task.app.store,
        settings=task.app.settings,
        deadline=deadline,
        run=doc,
        app=task.app,
        spec=spec,
        log_sink=task.app.node_log_capture.add,
    )


def _call(node_type: NodeType[Any], spec: NodeSpec, context: NodeContext) -> Any:
    """Render the params, validate them, call the node's function and check its output."""
    scope = build_scope(context.variables, context.outputs, context.run_id, context.workflow)
    rendered = {
        key: value
        if key in node_type.raw_params
        else render(value, scope, f"node '{spec.id}', parameter '{key}'", context.seconds_left())
        for key, value in spec.params.items()
    }
    try:
        params = node_type.params.model_validate(rendered)
    except ValidationError as exc:
        problems = "; ".join(
            f"parameter '{'.'.join(str(p) for p in e['loc']) or '(params)'}': {e['msg']}"
            for e in exc.errors()
        )
        raise NodeError(f"node '{spec.id}' ({spec.type}): {problems}") from exc
    try:
        output = node_type.run(params, context)
    except SoftTimeLimitExceeded as exc:
        raise NodeTimeout(f"node '{spec.id}' timed out after {spec.timeout_s:g} s (timeout_s)") from exc
    if isinstance(output, Wait):
        return output
    try:
        if isinstance(output, AfterEnd):
            return replace(output, output=_JSON.validate_python(output.output))
        return _JSON.validate_python(output)
    except ValidationError as exc:
        if isinstance(output, AfterEnd):
            _drop(context.run_id, spec.id, output)
        raise NodeError(
            f"node '{spec.id}' ({spec.type}) returned output that is not JSON: {exc.errors()[0]['msg']}"
        ) from exc


def _failure(
    exc: BaseException, attempt: int, started: datetime, with_traceback: bool = True
) -> dict[str, Any]:
    known = isinstance(exc, NodeError | TemplateError | DocumentTooLarge)
    message = str(exc) if known else f"{type(exc).__name__}: {exc}"
    trace = "".join(tb.format_exception(exc, limit=-4)) if with_traceback and not known else None
    return node_state(status="failed", error=message, traceback=trace, attempts=attempt, started_at=started)


def record_engine_fault(app: OrchestratorApp, run_id: str, task_name: str, exc: BaseException) -> None:
    """End a run as `error` after an engine fault, and tell whoever waits for it."""
    message = f"engine fault in task {task_name}: {type(exc).__name__}: {exc}"
    logger.error("run %s: %s", run_id, message)
    ended = app.store.end_run(run_id, "error", error=message)
    if ended is not None:
        tell_waiters(app, ended)


def end_run(
    app: OrchestratorApp,
    run_id: str,
    output: Any = None,
    final_nodes: list[str] | None = None,
) -> str | None:
    """The run's last step after parallel work, or after a last node that another message
    ended: decide its status and results from its nodes, once.

    Args:
        output, final_nodes: the workflow's; read from the run's workflow version when
            `final_nodes` is None.
    """
    store = app.store
    doc = store.get_run_document(run_id)
    if doc["status"] not in ("pending", "running"):
        return None
    if final_nodes is None:
        spec = app.specs.of_run(doc)
        output, final_nodes = spec.output, [node.id for node in spec.final_nodes()]
    room = app.settings.max_run_doc_bytes - document_size(doc)
    outcome = run_outcome(doc, output, final_nodes, room)
    ended = store.end_run(
        run_id,
        outcome.status,
        results=outcome.results,
        error=outcome.error,
        results_omitted=outcome.results_omitted,
    )
    if ended is None:
        return None
    tell_waiters(app, ended)
    return outcome.status
