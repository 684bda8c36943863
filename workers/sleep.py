"""`sleep`: waits `seconds`, for tests, demos and timing. Honours the node's `timeout_s`."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeTimeout


class SleepParams(BaseModel):
    """How long to sleep, and an optional value to return."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=3600)
    output: Any = None


def run(params: SleepParams, context: NodeContext) -> dict[str, Any]:
    """Sleep, then return `{slept: seconds, output}`; fail when the deadline comes first."""
    left = context.seconds_left()
    if left is not None and left < params.seconds:
        time.sleep(max(left, 0))
        raise NodeTimeout(
            f"node '{context.node_id}' timed out: sleeping {params.seconds:g} s past its timeout"
        )
    time.sleep(params.seconds)
    return {"slept": params.seconds, "output": params.output}


node_type = NodeType(name="sleep", params=SleepParams, run=run, description="waits `seconds`")
