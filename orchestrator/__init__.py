"""Workflow orchestration on Celery: workflows of nodes, child runs and schedules, with
MongoDB run documents as the source of truth."""

from orchestrator.api import Orchestrator
from orchestrator.errors import (
    NodeError,
    OrchestratorError,
    RunNotFound,
    StoreError,
    TemplateError,
    WaitTimeout,
    WorkflowNotFound,
    WorkflowValidationError,
)
from orchestrator.models import NodeState, Run
from orchestrator.registry import NodeContext, NodeType
from orchestrator.spec import NodeSpec, WorkflowSpec

__all__ = [
    "NodeContext",
    "NodeError",
    "NodeSpec",
    "NodeState",
    "NodeType",
    "Orchestrator",
    "OrchestratorError",
    "Run",
    "RunNotFound",
    "StoreError",
    "TemplateError",
    "WaitTimeout",
    "WorkflowNotFound",
    "WorkflowSpec",
    "WorkflowValidationError",
]
