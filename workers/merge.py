"""`merge`: combines the outputs of the nodes it waits for into one value.

Inputs are the node's own `after` entries (read from its spec; a branch such as `check.yes`
counts as the node `check`), in `after` order, or the node ids listed in `inputs`. An input
that was skipped (a condition branch not taken, a skipped dependency) is left out and named
in the output, so a merge after both sides of a condition takes whichever side ran.

Modes:
    object: `{node_id: output}` (the default).
    concat: the inputs' lists joined, in input order.
    sum:    numbers added; or objects added key by key (nested objects too), a key missing
            from some inputs counting as absent there.

Output: `{result, inputs, skipped}`: the merged value, the ids merged and the ids left out.
The merged value sits under `result` rather than at the top level so that no node id (a
node may be named `skipped`) can collide with the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError

Mode = Literal["object", "concat", "sum"]


class MergeParams(BaseModel):
    """How to merge (`mode`) and, optionally, which nodes (`inputs`, default: the node's `after`)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "object"
    inputs: list[str] | None = Field(default=None, min_length=1)


def input_ids(params: MergeParams, context: NodeContext) -> list[str]:
    """The ids to merge: `inputs`, else the node's `after` entries without their branches."""
    if params.inputs is not None:
        return list(dict.fromkeys(params.inputs))
    if context.spec is None or not context.spec.after:
        raise NodeError(
            f"node '{context.node_id}' (merge): nothing to merge: list the nodes in 'after' "
            "or in the parameter 'inputs'"
        )
    return context.spec.dependency_ids()


def collect(ids: list[str], context: NodeContext) -> tuple[dict[str, Any], list[str]]:
    """The outputs of the finished inputs (in order) and the ids of the skipped ones."""
    states: Mapping[str, Any] = context.run.get("nodes", {})
    found: dict[str, Any] = {}
    skipped: list[str] = []
    for node_id in ids:
        if node_id in context.outputs:
            found[node_id] = context.outputs[node_id]
            continue
        status = states.get(node_id, {}).get("status")
        if status == "skipped":
            skipped.append(node_id)
        elif status is None:
            raise NodeError(
                f"node '{context.node_id}' (merge), parameter 'inputs': '{node_id}' names no node of this run"
            )
        else:
            raise NodeError(
                f"node '{context.node_id}' (merge): input '{node_id}' is {status}, not finished; "
                "a node can only merge nodes it waits for (list them in 'after')"
            )
    return found, skipped


def concat(outputs: Mapping[str, Any], where: str) -> list[Any]:
    """The lists joined in order; a NodeError names the first input that is not a list."""
    joined: list[Any] = []
    for node_id, output in outputs.items():
        if not isinstance(output, list):
            raise NodeError(
                f"{where}, mode 'concat': input '{node_id}' is {_kind(output)}, not a list "
                "(concat joins lists; use mode 'object' to keep any outputs)"
            )
        joined.extend(output)
    return joined


def add(outputs: Mapping[str, Any], where: str) -> Any:
    """Numbers added, or objects added key by key; None when there is nothing to add."""
    total: Any = None
    for node_id, output in outputs.items():
        _check_summable(output, node_id, where, "")
        total = output if total is None else _add(total, output, node_id, where, "")
    return total


def _add(total: Any, value: Any, node_id: str, where: str, path: str) -> Any:
    if _is_number(total) and _is_number(value):
        return total + value
    if isinstance(total, dict) and isinstance(value, dict):
        merged = dict(total)
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            merged[key] = _add(merged[key], item, node_id, where, sub) if key in merged else item
        return merged
    at = f" at key '{path}'" if path else ""
    raise NodeError(
        f"{where}, mode 'sum': input '{node_id}'{at} is {_kind(value)} and cannot be added "
        f"to {_kind(total)} (sum adds numbers, or objects of numbers key by key)"
    )


def _check_summable(value: Any, node_id: str, where: str, path: str) -> None:
    if _is_number(value):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_summable(item, node_id, where, f"{path}.{key}" if path else key)
        return
    at = f" at key '{path}'" if path else ""
    raise NodeError(
        f"{where}, mode 'sum': input '{node_id}'{at} is {_kind(value)}, not a number "
        "(sum adds numbers, or objects of numbers key by key)"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """A JSON type name with its article, for messages (`a string`, `an object`, `null`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def run(params: MergeParams, context: NodeContext) -> dict[str, Any]:
    """Merge the finished inputs by `mode`; return `{result, inputs, skipped}`."""
    outputs, skipped = collect(input_ids(params, context), context)
    where = f"node '{context.node_id}' (merge)"
    result: Any
    if params.mode == "concat":
        result = concat(outputs, where)
    elif params.mode == "sum":
        result = add(outputs, where)
    else:
        result = dict(outputs)
    return {"result": result, "inputs": list(outputs), "skipped": skipped}


node_type = NodeType(
    name="merge",
    params=MergeParams,
    run=run,
    description="combines the outputs of its `after` nodes (object, concat or sum)",
    pure=True,
)
