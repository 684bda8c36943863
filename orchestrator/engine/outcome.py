"""Decisions made from a run document: whether a node runs or is skipped, and how a run ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bson
from pydantic import JsonValue

from orchestrator.constants import RunStatus
from orchestrator.definitions.spec import NodeSpec
from orchestrator.definitions.templating import build_scope, render
from orchestrator.errors import TemplateError


def dependency_verdict(spec: NodeSpec, states: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why the node must be skipped, or None when it should run.

    A node is skipped when a dependency failed, or when every one of its paths is cut: each
    dependency skipped, or finished on a branch other than the one it waits for.
    """
    deps = spec.dependencies()
    if not deps:
        return None
    cut: list[str] = []
    for dep, branch in deps:
        state = states.get(dep, {})
        status = state.get("status")
        if status == "failed":
            return f"skipped: dependency '{dep}' failed"
        if status != "finished":
            cut.append(f"'{dep}' {status or 'missing'}")
            continue
        output = state.get("output")
        taken = output.get("branch") if isinstance(output, Mapping) else None
        if branch is not None and taken != branch:
            cut.append(f"branch '{dep}.{branch}' not taken")
            continue
        return None
    return "skipped: every path is cut (" + ", ".join(cut) + ")"


def finished_outputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Outputs of the run's finished nodes, by node id."""
    return {k: v.get("output") for k, v in doc.get("nodes", {}).items() if v.get("status") == "finished"}


@dataclass(frozen=True)
class Outcome:
    """How a run ends: the fields its end writes to the run document.

    `results_omitted` says why `results` is null although the run finished: the workflow has
    no `output`, and the default copy of its final nodes' outputs did not fit in the room
    the run document had left. The outputs are still on the nodes, so the run is not an error.
    """

    status: RunStatus
    results: Any = None
    error: str | None = None
    results_omitted: str | None = None


def run_outcome(
    doc: Mapping[str, Any], output: JsonValue, final_nodes: list[str], room_bytes: int | None = None
) -> Outcome:
    """How a run ends, from its nodes.

    `failed` when any node failed (the error names them); `error` when the workflow's
    `output` cannot be evaluated, or its value would not fit in the `room_bytes` the run
    document has left; else `finished` with `results` = the evaluated `output`, or
    `{node_id: output}` of the final nodes that finished. That default copy, when it does not
    fit, is left out (`results` null, `results_omitted` saying why): the user did not ask for
    it, and the outputs are on the nodes, so it must not cost them the run.
    """
    status, results, error = _outcome(doc, output, final_nodes)
    if status != "finished" or room_bytes is None:
        return Outcome(status, results, error)
    size = len(bson.encode({"results": results}))
    if size <= room_bytes:
        return Outcome(status, results, error)
    kib, room = size / 1024, max(room_bytes, 0) / 1024
    if output is None:
        note = (
            f"the final nodes' outputs ({kib:.0f} KiB) do not fit in the {room:.0f} KiB the run "
            "document has left under ORCH_MAX_RUN_DOC_BYTES, so they are not copied to `results`: "
            f"read them on the nodes (`orchestrator runs show {doc['_id']} --json`), or give the "
            "workflow an `output` that picks what the run returns"
        )
        return Outcome("finished", results_omitted=note)
    message = (
        f"the workflow's output is {kib:.0f} KiB, more than the {room:.0f} KiB its "
        "run document has left under ORCH_MAX_RUN_DOC_BYTES: make `output` return "
        "identifiers or a summary, not the data"
    )
    return Outcome("error", error=message)


def _outcome(
    doc: Mapping[str, Any], output: JsonValue, final_nodes: list[str]
) -> tuple[RunStatus, Any, str | None]:
    nodes = doc.get("nodes", {})
    failed = [node_id for node_id, state in nodes.items() if state.get("status") == "failed"]
    if failed:
        first = nodes[failed[0]].get("error") or "no message"
        names = ", ".join(f"'{n}'" for n in failed)
        return "failed", None, f"node{'s' if len(failed) > 1 else ''} {names} failed: {first}"
    outputs = finished_outputs(doc)
    if output is None:
        return "finished", {n: outputs[n] for n in final_nodes if n in outputs}, None
    scope = build_scope(doc.get("variables", {}), outputs, doc["_id"], doc["workflow"])
    try:
        return "finished", render(output, scope, "workflow output"), None
    except TemplateError as exc:
        return "error", None, str(exc)
