"""Re-runs and workflow removal (in progress)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.app import OrchestratorApp
    from orchestrator.store import RunStore


def rerun(app: OrchestratorApp, run_id: str, from_failed: bool = False, from_node: str | None = None) -> str:
    """Start a run of the same workflow and variables, linked to `run_id`."""
    raise OrchestratorError("not yet")


def delete_workflow(store: RunStore, name: str, force: bool = False) -> None:
    """Remove a workflow definition."""
    raise OrchestratorError("not yet")
