"""Workflow orchestration on Celery: workflows of nodes, child runs and schedules, with
MongoDB run documents as the source of truth.

The names below are imported on first use (PEP 562), so that `import orchestrator.cli` and
commands that only read runs do not pay for Celery and every node type.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.api import Orchestrator
    from orchestrator.definitions.spec import NodeSpec, WorkflowSpec
    from orchestrator.engine.registry import AfterEnd, NodeContext, NodeType, Wait
    from orchestrator.errors import (
        NodeError,
        OrchestratorError,
        RunNotFound,
        RunNotSent,
        RunStillActive,
        ServiceUnavailable,
        StoreError,
        TemplateError,
        WaitTimeout,
        WorkflowNotFound,
        WorkflowValidationError,
    )
    from orchestrator.store.models import NodeState, Run
    from orchestrator.store.retention import Removed

_WHERE = {
    "Orchestrator": "orchestrator.api",
    "NodeError": "orchestrator.errors",
    "OrchestratorError": "orchestrator.errors",
    "RunNotFound": "orchestrator.errors",
    "RunNotSent": "orchestrator.errors",
    "RunStillActive": "orchestrator.errors",
    "Removed": "orchestrator.store.retention",
    "ServiceUnavailable": "orchestrator.errors",
    "StoreError": "orchestrator.errors",
    "TemplateError": "orchestrator.errors",
    "WaitTimeout": "orchestrator.errors",
    "WorkflowNotFound": "orchestrator.errors",
    "WorkflowValidationError": "orchestrator.errors",
    "NodeState": "orchestrator.store.models",
    "Run": "orchestrator.store.models",
    "AfterEnd": "orchestrator.engine.registry",
    "NodeContext": "orchestrator.engine.registry",
    "NodeType": "orchestrator.engine.registry",
    "Wait": "orchestrator.engine.registry",
    "NodeSpec": "orchestrator.definitions.spec",
    "WorkflowSpec": "orchestrator.definitions.spec",
}

__all__ = [
    "AfterEnd",
    "NodeContext",
    "NodeError",
    "NodeSpec",
    "NodeState",
    "NodeType",
    "Orchestrator",
    "OrchestratorError",
    "Removed",
    "Run",
    "RunNotFound",
    "RunNotSent",
    "RunStillActive",
    "ServiceUnavailable",
    "StoreError",
    "TemplateError",
    "Wait",
    "WaitTimeout",
    "WorkflowNotFound",
    "WorkflowSpec",
    "WorkflowValidationError",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
