"""Re-runs: a run's workflow again with its variables, whole or from where it failed; and the
removal of a workflow.

A re-run is a new run (its own document and id, `rerun_of` naming the original, trigger
`rerun`), so the original keeps its history. From its failed nodes (`from_failed`, as
Airflow's "clear" and Prefect's retry do) or from a node (`from_node`), the new run starts
with the original's finished nodes that come before those copied in, outputs included
(`reused_from` on each), and runs only the rest: the nodes to redo and every node after them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.constants import RUN_ACTIVE, RUN_OVER
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.engine.compiler import compile_workflow
from orchestrator.engine.launcher import merge_variables, send_canvas
from orchestrator.errors import OrchestratorError
from orchestrator.store.models import new_run_document, new_run_id
from orchestrator.store.spec_versions import spec_digest

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp
    from orchestrator.store.run_store import RunStore


def rerun(app: OrchestratorApp, run_id: str, from_failed: bool = False, from_node: str | None = None) -> str:
    """Start a run of `run_id`'s workflow with its variables, linked to it; the new run's id.

    Raises:
        RunNotFound, WorkflowNotFound: no such run, or its workflow was removed.
        OrchestratorError: a partial re-run of a run still active, of a run where nothing
            failed, or from a node the workflow does not have.
    """
    original = app.store.get_run_document(run_id)
    spec = app.store.get_workflow(original["workflow"])
    redo = _nodes_to_redo(spec, original, from_failed, from_node)
    new_id = new_run_id()
    doc = new_run_document(
        run_id=new_id,
        workflow=spec.name,
        node_ids=[node.id for node in spec.nodes],
        variables=merge_variables(spec, original.get("variables") or {}, app.settings.max_run_doc_bytes // 2),
        trigger={"type": "rerun", "run_id": run_id, **_how(from_failed, from_node)},
    )
    doc["rerun_of"] = run_id
    doc["spec_digest"] = spec_digest(spec)
    for node_id in set(doc["nodes"]) - redo:
        doc["nodes"][node_id] = {**original["nodes"][node_id], "reused_from": run_id}
    handed = app.registry.handed_types(node.type for node in spec.nodes)
    remaining = None if len(redo) == len(spec.nodes) else redo
    canvas = compile_workflow(app, spec, new_id, handed, remaining=remaining, digest=doc["spec_digest"])
    app.store.create_run(doc)
    send_canvas(app, new_id, canvas)
    app.store.mark_dispatched([new_id])
    return new_id


def _how(from_failed: bool, from_node: str | None) -> dict[str, Any]:
    if from_node is not None:
        return {"from_node": from_node}
    return {"from_failed": True} if from_failed else {}


def _nodes_to_redo(
    spec: WorkflowSpec, original: dict[str, Any], from_failed: bool, from_node: str | None
) -> set[str]:
    """Every node of the workflow for a whole re-run; else the nodes the original did not
    finish (and `from_node`), with every node after them."""
    every = {node.id for node in spec.nodes}
    if not from_failed and from_node is None:
        return every
    run_id = original["_id"]
    if original["status"] in RUN_ACTIVE:
        raise OrchestratorError(
            f"run {run_id} is still {original['status']}: a re-run from its failed nodes needs it over "
            "(cancel it, or re-run it whole)"
        )
    if from_node is not None and from_node not in every:
        raise OrchestratorError(
            f"workflow '{spec.name}' has no node '{from_node}' (nodes: {', '.join(sorted(every))})"
        )
    states = original.get("nodes", {})
    unfinished = {n for n in every if states.get(n, {}).get("status") != "finished"}
    start = unfinished | ({from_node} if from_node else set())
    if not start:
        raise OrchestratorError(
            f"every node of run {run_id} finished: re-run it whole, or from a node (--from NODE)"
        )
    assert original["status"] in RUN_OVER
    return start | _after(spec, start)


def _after(spec: WorkflowSpec, nodes: set[str]) -> set[str]:
    """The nodes that depend on any of `nodes`, directly or not."""
    dependents: dict[str, set[str]] = {}
    for node in spec.nodes:
        for dependency in node.dependency_ids():
            dependents.setdefault(dependency, set()).add(node.id)
    found: set[str] = set()
    stack = list(nodes)
    while stack:
        for child in dependents.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def delete_workflow(store: RunStore, name: str, force: bool = False) -> None:
    """Remove a registered workflow; its runs stay, readable as before.

    Raises:
        WorkflowNotFound: no workflow has that name.
        OrchestratorError: it has active runs and `force` is not given (an active run whose
            workflow is gone cannot be resumed after a crash: the reconciler ends it).
    """
    store.get_workflow(name)  # WorkflowNotFound, with its hint
    if not force:
        active = store.runs.count_documents({"workflow": name, "status": {"$in": list(RUN_ACTIVE)}})
        if active:
            raise OrchestratorError(
                f"workflow '{name}' has {active} active run{'s' if active != 1 else ''}: wait for "
                f"{'them' if active != 1 else 'it'}, cancel {'them' if active != 1 else 'it'}, or "
                "delete with --force (an active run whose workflow is gone cannot be resumed after a crash)"
            )
    store.delete_workflow(name)
