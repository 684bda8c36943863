"""`condition`: decides a branch. Nodes after `<id>.yes` run when `if` is true, `<id>.no` when false.

The engine renders `if` before the node runs, in the template sandbox: a single expression
such as `"{{ nodes.analyze.output.volatility > threshold }}"` comes back as a native bool.
Any other value is read with Python truthiness (`0`, `""`, `[]`, `{}` and `null` are false;
note that the *text* `"false"` is a non-empty string, hence true) and the output says which
type was coerced, so a template that renders as text instead of a bool is visible in the run.
The engine skips the branch not taken (`orchestrator.engine.outcome`) from the output's `branch`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from orchestrator.engine.registry import NodeContext, NodeType


class ConditionParams(BaseModel):
    """`if`: the value to test, usually one `{{ expression }}` (written `if` in workflow files)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    if_: JsonValue = Field(alias="if")


def decide(value: Any) -> dict[str, Any]:
    """The output for a tested value: `{result, branch}`, plus `coerced_from` for non-booleans."""
    result = bool(value)
    output: dict[str, Any] = {"result": result, "branch": "yes" if result else "no"}
    if not isinstance(value, bool):
        output["coerced_from"] = type(value).__name__
    return output


def run(params: ConditionParams, context: NodeContext) -> dict[str, Any]:
    """Return `{result, branch}`: `branch` is `yes` when `if` is true, else `no`."""
    output = decide(params.if_)
    if "coerced_from" in output:
        context.logger.info(
            "condition '%s': 'if' is a %s, not a boolean; read as %s",
            context.node_id,
            output["coerced_from"],
            output["result"],
        )
    return output


node_type = NodeType(
    name="condition",
    params=ConditionParams,
    run=run,
    description="takes the `yes` or `no` branch depending on `if`",
    branches=("yes", "no"),
    pure=True,
)
