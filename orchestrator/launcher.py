"""Starting a run: its document first (the source of truth), then its canvas on the broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.canvas import Signature
from pydantic import JsonValue, TypeAdapter, ValidationError

from orchestrator.compiler import compile_workflow
from orchestrator.errors import OrchestratorError
from orchestrator.models import new_run_document, new_run_id
from orchestrator.spec import WorkflowSpec

if TYPE_CHECKING:
    from orchestrator.app import OrchestratorApp

_VARIABLES = TypeAdapter(dict[str, JsonValue])


@dataclass(frozen=True)
class Lineage:
    """Where a child run comes from."""

    parent_run_id: str
    parent_node_id: str
    root_run_id: str
    depth: int


def merge_variables(spec: WorkflowSpec, given: dict[str, Any] | None) -> dict[str, Any]:
    """The workflow's default variables overridden by those given; JSON only."""
    try:
        given = _VARIABLES.validate_python(given or {})
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise OrchestratorError(
            f"workflow '{spec.name}': variable '{where}' is not JSON: {exc.errors()[0]['msg']}"
        ) from exc
    return {**spec.variables, **given}


def prepare_run(
    app: OrchestratorApp,
    spec: WorkflowSpec,
    variables: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    run_id: str | None = None,
    lineage: Lineage | None = None,
) -> tuple[str, Signature | None]:
    """Create the run document and return the canvas to send, once per run id.

    Returns:
        The run id, and its canvas, or None when a run with that id existed already (its
        canvas was sent by whoever created it).
    """
    run_id = run_id or new_run_id()
    doc = new_run_document(
        run_id=run_id,
        workflow=spec.name,
        node_ids=[node.id for node in spec.nodes],
        variables=merge_variables(spec, variables),
        trigger=trigger or {"type": "api"},
        parent_run_id=lineage.parent_run_id if lineage else None,
        parent_node_id=lineage.parent_node_id if lineage else None,
        root_run_id=lineage.root_run_id if lineage else None,
        depth=lineage.depth if lineage else 0,
    )
    canvas = compile_workflow(app, spec, run_id)  # before the insert: a bad graph leaves no document
    _, created = app.store.create_run(doc)
    return run_id, canvas if created else None


def launch_run(
    app: OrchestratorApp,
    spec: WorkflowSpec,
    variables: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    run_id: str | None = None,
    lineage: Lineage | None = None,
) -> tuple[str, bool]:
    """Create the run document and send the run's canvas, once per run id.

    Returns:
        The run id, and False when a run with that id existed already (nothing was sent).
    """
    run_id, canvas = prepare_run(app, spec, variables, trigger, run_id, lineage)
    if canvas is not None:
        canvas.apply_async()
    return run_id, canvas is not None
