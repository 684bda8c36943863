"""Starting a run: its document first (the source of truth), then its canvas on the broker,
then `dispatched_at` in the document. A run left `pending` without `dispatched_at` (its
creator stopped between the insert and the send) is sent again by the next start with the
same run id, or by the sweeper (`relaunch_undispatched`, every 30 s under `orchestrator beat`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import bson
from celery.canvas import Signature
from pydantic import JsonValue, TypeAdapter, ValidationError

from orchestrator.constants import DISPATCH_GRACE_S, RUN_ACTIVE
from orchestrator.definitions.secrets import check_variable_names
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.engine.compiler import compile_workflow, hand_to_first_steps
from orchestrator.engine.run_ends import tell_waiters
from orchestrator.errors import OrchestratorError, RunNotFound, WorkflowNotFound
from orchestrator.store.models import aware, new_run_document, new_run_id, utcnow
from orchestrator.store.spec_versions import spec_digest

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp

logger = logging.getLogger("orchestrator.engine.launcher")
_VARIABLES = TypeAdapter(dict[str, JsonValue])


@dataclass(frozen=True)
class Lineage:
    """Where a child run comes from."""

    parent_run_id: str
    parent_node_id: str
    root_run_id: str
    depth: int


def merge_variables(
    spec: WorkflowSpec, given: dict[str, Any] | None, max_bytes: int | None = None
) -> dict[str, Any]:
    """The workflow's default variables overridden by those given: JSON only, none named like
    a secret (unless the workflow allows it), and within the run document's size budget."""
    try:
        given = _VARIABLES.validate_python(given or {})
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise OrchestratorError(
            f"workflow '{spec.name}': variable '{where}' is not JSON: {exc.errors()[0]['msg']}"
        ) from exc
    merged = {**spec.variables, **given}
    if not spec.allow_secret_variables:
        check_variable_names(merged, f"workflow '{spec.name}'")
    if max_bytes is not None:
        size = len(bson.encode({"variables": merged}))
        if size > max_bytes:
            raise OrchestratorError(
                f"workflow '{spec.name}': its variables are {size / 1024:.0f} KiB; a run's variables "
                f"may take {max_bytes / 1024:.0f} KiB, half its document's limit "
                "(ORCH_MAX_RUN_DOC_BYTES), so that node outputs fit: pass identifiers (a symbol, "
                "a date, a key), not datasets"
            )
    return merged


def prepare_run(
    app: OrchestratorApp,
    spec: WorkflowSpec,
    variables: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    run_id: str | None = None,
    lineage: Lineage | None = None,
    resend_after_s: float = DISPATCH_GRACE_S,
) -> tuple[str, Signature | None]:
    """Create the run document and return the canvas to send, once per run id.

    The caller sends the canvas, then records it (`RunStore.mark_dispatched`). A run with
    that id that exists, is `resend_after_s` old and was never sent (its creator stopped
    between the insert and the send) is sent again, by one caller only.

    Returns:
        The run id, and its canvas, or None when a run with that id exists (sent, or
        too young for its creator to be given up on).
    """
    run_id = run_id or new_run_id()
    doc = new_run_document(
        run_id=run_id,
        workflow=spec.name,
        node_ids=[node.id for node in spec.nodes],
        variables=merge_variables(spec, variables, app.settings.max_run_doc_bytes // 2),
        trigger=trigger or {"type": "api"},
        parent_run_id=lineage.parent_run_id if lineage else None,
        parent_node_id=lineage.parent_node_id if lineage else None,
        root_run_id=lineage.root_run_id if lineage else None,
        depth=lineage.depth if lineage else 0,
    )
    digest = doc["spec_digest"] = spec_digest(spec)  # the run's end, segments, the reconciler read it
    # Compiled before the insert: a bad graph leaves no document.
    handed = app.registry.handed_types(n.type for n in spec.nodes)
    canvas = compile_workflow(app, spec, run_id, handed, digest=digest)
    stored, created = app.store.create_run(doc)
    if created:
        hand_to_first_steps(app, spec, canvas, doc, handed)  # its first nodes need not read it
        return run_id, canvas
    resend = _abandoned(stored, resend_after_s) and _same_nodes(stored, spec)
    if resend and app.store.claim_dispatch(run_id, stored.get("dispatch_claim")):
        logger.warning("run %s of '%s' was never sent to a worker; sending it now", run_id, spec.name)
        return run_id, canvas
    return run_id, None


def _abandoned(stored: dict[str, Any], after_s: float) -> bool:
    """Whether a run is `pending`, never sent, older than `after_s` and not claimed by another
    caller in the last `after_s` seconds: its creator (or claimer) is gone.

    A document without `dispatched_at` predates its recording: whether it was sent is unknown.
    """
    return (
        stored.get("status") == "pending"
        and "dispatched_at" in stored
        and stored["dispatched_at"] is None
        and _older_than(stored["created_at"], after_s)
        and (stored.get("dispatch_claim") is None or _older_than(stored.get("dispatch_claimed_at"), after_s))
    )


def _older_than(when: Any, seconds: float) -> bool:
    """Whether a stored time is more than `seconds` ago (a missing one counts as long ago)."""
    return not isinstance(when, datetime) or aware(when) < utcnow() - timedelta(seconds=seconds)


def _same_nodes(stored: dict[str, Any], spec: WorkflowSpec) -> bool:
    return set(stored.get("nodes", {})) == {node.id for node in spec.nodes}


def launch_run(
    app: OrchestratorApp,
    spec: WorkflowSpec,
    variables: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    run_id: str | None = None,
    lineage: Lineage | None = None,
    resend_after_s: float = DISPATCH_GRACE_S,
) -> tuple[str, bool]:
    """Create the run document and send the run's canvas, once per run id (see `prepare_run`).

    Returns:
        The run id, and whether this call sent the canvas.
    """
    run_id, canvas = prepare_run(app, spec, variables, trigger, run_id, lineage, resend_after_s)
    dispatch(app, run_id, canvas)
    return run_id, canvas is not None


def dispatch(app: OrchestratorApp, run_id: str, canvas: Signature | None) -> None:
    """Send the canvas `prepare_run` gave (none: nothing to send), then record it sent."""
    if canvas is not None:
        send_canvas(app, run_id, canvas)
        app.store.mark_dispatched([run_id])


def drop_unsent(app: OrchestratorApp, run_id: str, reason: str) -> None:
    """End a run that was prepared but must not run, if it has not started: `cancelled`,
    with `reason` as its error."""
    ended = app.store.end_run(run_id, "cancelled", error=reason, from_statuses=("pending",))
    if ended is not None:
        logger.warning("run %s: %s", run_id, reason)
        tell_waiters(app, ended)


def send_canvas(app: OrchestratorApp, run_id: str, canvas: Signature) -> None:
    """Send a run's canvas; when the broker refuses it, leave the run for the sweeper."""
    try:
        canvas.apply_async()
    except Exception:
        app.store.release_dispatch(run_id)  # a claimed re-send gives its claim back
        raise


def relaunch_undispatched(app: OrchestratorApp, grace_s: float = DISPATCH_GRACE_S) -> list[str]:
    """Send the canvas of runs still `pending` and never sent `grace_s` after their creation;
    end as `error` those whose workflow is gone or has other nodes now.

    Returns:
        The ids of the runs sent again.
    """
    sent = []
    for doc in app.store.undispatched_runs():
        run_id, name = doc["_id"], doc["workflow"]
        if not _abandoned(doc, grace_s):
            continue
        orphaned = _orphaned(app, doc)
        if orphaned is not None:
            drop_unsent(app, run_id, orphaned)
            continue
        try:
            spec = app.store.get_workflow(name)
        except WorkflowNotFound:
            _give_up(app, run_id, f"workflow '{name}' was removed before this run could be sent to a worker")
            continue
        if not _same_nodes(doc, spec):
            _give_up(
                app,
                run_id,
                f"workflow '{name}' changed its nodes before this run could be sent to a worker; "
                "trigger it again",
            )
            continue
        if app.store.claim_dispatch(run_id, doc.get("dispatch_claim")):
            logger.warning("run %s of '%s' was never sent to a worker; sending it now", run_id, name)
            try:
                handed = app.registry.handed_types(n.type for n in spec.nodes)
                same = doc.get("spec_digest") == spec_digest(spec)  # its version: it may be cut
                canvas = compile_workflow(
                    app, spec, run_id, handed, digest=doc["spec_digest"] if same else None
                )
                send_canvas(app, run_id, canvas)
            except Exception as exc:  # the broker is away: the next sweep tries again
                logger.error("run %s of '%s' could not be sent: %s", run_id, name, exc)
                continue
            sent.append(run_id)
    return sent


def _orphaned(app: OrchestratorApp, doc: dict[str, Any]) -> str | None:
    """Why a child run that was never sent must not be: its parent run is over (or gone)
    and the parent's node never recorded it (a `fire_and_forget` node records its child
    before sending it); None for a run that may go."""
    parent_id, node_id = doc.get("parent_run_id"), doc.get("parent_node_id")
    if not isinstance(parent_id, str) or not isinstance(node_id, str):
        return None
    try:
        parent = app.store.read_run(parent_id, [node_id])
    except RunNotFound:
        return f"not started: its parent run {parent_id} was deleted before it could be sent"
    state = parent.get("nodes", {}).get(node_id, {})
    if parent["status"] in RUN_ACTIVE or state.get("status") == "finished":
        return None
    return unrecorded(parent_id, node_id)


def unrecorded(parent_run_id: str, node_id: str) -> str:
    """The error of a child run dropped unsent: its parent's node never recorded it."""
    return f"not started: its parent run {parent_run_id} was over before node '{node_id}' could record it"


def _give_up(app: OrchestratorApp, run_id: str, message: str) -> None:
    logger.error("run %s: %s", run_id, message)
    ended = app.store.end_run(run_id, "error", error=message, from_statuses=("pending",))
    if ended is not None:
        tell_waiters(app, ended)
