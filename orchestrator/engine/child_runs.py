"""Child runs: their ids, their variables' checks, and the outputs a parent node reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from orchestrator.definitions.secrets import secret_names
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.errors import NodeError


def child_run_id(parent_run_id: str, node_id: str, loop_index: int | None = None) -> str:
    """The id of the child run a node starts: the same on every delivery of the node."""
    suffix = f".{loop_index}" if loop_index is not None else ""
    return f"{parent_run_id}.{node_id}{suffix}"


def check_child_variables(variables: Any, node_id: str, max_bytes: int, allow_secrets: bool) -> None:
    """Refuse variables that are not JSON, too large, or named like secrets.

    Raises:
        NodeError: saying which variable and what to do instead.
    """
    where = f"node '{node_id}', parameter 'variables'"
    try:
        size = len(json.dumps(variables, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise NodeError(f"{where}: variables passed to a child run must be JSON: {exc}") from exc
    if size > max_bytes:
        raise NodeError(
            f"{where}: {size / 1024:.1f} KiB of variables is over the {max_bytes / 1024:.0f} KiB limit "
            "(ORCH_MAX_CHILD_VARIABLES_BYTES): pass identifiers (a symbol, a date, a key), not datasets"
        )
    if not allow_secrets:
        for name in secret_names(variables):
            raise NodeError(
                f"{where}: '{name}' looks like a secret; secrets belong in the environment of the "
                "workers (or a settings file), not in run variables. Set `allow_secret_variables: true` "
                "on the target workflow to pass it anyway"
            )


def finished_output(child: dict[str, Any], target: str, elapsed_s: float) -> dict[str, Any]:
    """What a waiting node returns for a child run that is over."""
    base = {"run_id": child["_id"], "targetWorkflow": target, "elapsed_s": round(elapsed_s, 3)}
    if child["status"] == "finished":
        return {
            "status": "finished",
            "targetStatus": "finished",
            "targetResults": child.get("results"),
            **base,
        }
    error = child.get("error") or f"child run {child['status']}"
    return {"status": "failed", "targetStatus": child["status"], "targetError": error, **base}


def timeout_output(child: dict[str, Any], target: str, elapsed_s: float, timeout_s: float) -> dict[str, Any]:
    """What a waiting node returns when its timeout passes first (the child goes on)."""
    message = f"run {child['_id']} of '{target}' is still {child['status']} after {timeout_s:g} s; it goes on"
    return {
        "status": "timeout",
        "targetStatus": child["status"],
        "message": message,
        "run_id": child["_id"],
        "targetWorkflow": target,
        "elapsed_s": round(elapsed_s, 3),
    }


def refused_output(target: str, message: str) -> dict[str, Any]:
    """What the node returns when no child could be started (unknown workflow, depth limit)."""
    return {
        "status": "failed",
        "targetStatus": "error",
        "targetError": message,
        "run_id": None,
        "targetWorkflow": target,
        "elapsed_s": 0.0,
    }


def target_workflows(spec: WorkflowSpec) -> Iterator[tuple[str, str]]:
    """`(node_id, workflow name)` for each child workflow the spec names literally.

    Covers `run_workflow` nodes and `parameter_loop` bodies of that type; templated names
    (`{{ ... }}`) are known only at run time and are left out.
    """
    for node in spec.nodes:
        params: Any = node.params
        if node.type == "parameter_loop" and isinstance(params.get("body"), dict):
            if params["body"].get("type") != "run_workflow":
                continue
            params = params["body"].get("params") or {}
        elif node.type != "run_workflow":
            continue
        target = params.get("workflow")
        if isinstance(target, str) and "{" not in target:
            yield node.id, target


def called_workflows(spec: WorkflowSpec) -> list[str]:
    """The workflows `spec` starts by a literal name, each once, in node order."""
    return list(dict.fromkeys(target for _, target in target_workflows(spec)))


def unknown_targets(spec: WorkflowSpec, registered: set[str]) -> list[str]:
    """Warnings for child workflows that are not registered (yet): the run would get an error."""
    return [
        f"workflow '{spec.name}', node '{node_id}': target workflow '{target}' is not registered; "
        "runs will get targetStatus 'error' until it is"
        for node_id, target in target_workflows(spec)
        if target not in registered
    ]
