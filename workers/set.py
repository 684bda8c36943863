"""`set`: returns its params, templates rendered. Handy to shape data or name a value."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.engine.registry import NodeContext, NodeType


class SetParams(BaseModel):
    """Any params; they become the node's output."""

    model_config = ConfigDict(extra="allow")


def run(params: SetParams, context: NodeContext) -> dict[str, Any]:
    """Return the rendered params as the output."""
    return dict(params.model_extra or {})


node_type = NodeType(name="set", params=SetParams, run=run, description="returns its params", pure=True)
