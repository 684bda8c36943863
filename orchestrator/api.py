"""The Python API: `Orchestrator` registers workflows, triggers runs and reads them back."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.app import OrchestratorApp, create_app
from orchestrator.errors import WaitTimeout
from orchestrator.launcher import launch_run
from orchestrator.models import Run
from orchestrator.run_ends import RunEndListener, tell_waiters
from orchestrator.settings import Settings
from orchestrator.spec import WorkflowSpec, load_workflow_file, parse_workflow


class Orchestrator:
    """The entry point for scripts: one per process, talking to Redis and MongoDB.

    Args:
        redis_url, mongo_url: override `REDIS_URL` / `MONGO_URL`.
        settings: all settings at once (the environment is read when omitted).
        app: an existing app (for an embedded worker sharing it).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        mongo_url: str | None = None,
        settings: Settings | None = None,
        app: OrchestratorApp | None = None,
    ) -> None:
        if app is not None:
            settings = app.settings
        settings = settings or Settings()
        overrides = {k: v for k, v in {"redis_url": redis_url, "mongo_url": mongo_url}.items() if v}
        if overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings
        self.app = app or create_app(settings)
        self.store = self.app.store
        self.store.ensure_indexes()

    def register(self, source: str | Path | Mapping[str, Any] | WorkflowSpec) -> WorkflowSpec:
        """Validate a workflow (a file path, a dict or a spec) and store it under its name."""
        known = self.app.registry.names()
        if isinstance(source, WorkflowSpec):
            spec = parse_workflow(source.model_dump(mode="json", exclude_defaults=True), known)
        elif isinstance(source, Mapping):
            spec = parse_workflow(source, known)
        else:
            spec = load_workflow_file(source, known)
        self.store.save_workflow(spec)
        return spec

    def workflows(self) -> list[WorkflowSpec]:
        """Every registered workflow."""
        return self.store.list_workflows()

    def trigger(
        self, name: str, variables: Mapping[str, Any] | None = None, trigger: Mapping[str, Any] | None = None
    ) -> str:
        """Start a run of a registered workflow and return its id at once."""
        spec = self.store.get_workflow(name)
        run_id, _ = launch_run(self.app, spec, dict(variables or {}), dict(trigger or {"type": "api"}))
        return run_id

    def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        on_progress: Callable[[Run], None] | None = None,
        poll_s: float = 1.0,
    ) -> Run:
        """Watch the run until it is over; `WaitTimeout` when `timeout` passes first.

        The run's end is announced on Redis, so this returns within milliseconds of it, not
        at the next poll; the document is still read every `poll_s` seconds, for progress
        and in case a notice is lost.

        Args:
            on_progress: called with the run each time it is read (for progress displays).
            poll_s: seconds between reads of the run document while no notice comes.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with RunEndListener(self.app.backend.client, run_id) as listener:  # before the first read
            while True:
                run = self.store.get_run(run_id)
                if on_progress is not None:
                    on_progress(run)
                if run.is_over:
                    return run
                pause = poll_s
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeout(run_id, timeout or 0, run.status)
                    pause = min(pause, remaining)
                listener.wait_for_notice(pause)

    def run(self, name: str, variables: Mapping[str, Any] | None = None, timeout: float | None = None) -> Run:
        """Trigger a run and wait for it."""
        return self.wait(self.trigger(name, variables), timeout=timeout)

    def get_run(self, run_id: str) -> Run:
        """The run document (`RunNotFound` when there is none)."""
        return self.store.get_run(run_id)

    def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[Run]:
        """Runs, newest first."""
        return self.store.list_runs(workflow=workflow, status=status, parent_run_id=parent, limit=limit)

    def run_tree(self, run_id: str) -> Run:
        """The run with its child runs in `children`, recursively."""
        return self.store.run_tree(run_id)

    def cancel(self, run_id: str, cascade: bool = True) -> list[str]:
        """Cancel a run (and, with `cascade`, its active descendants); the ids cancelled.

        Nodes already running finish their current step; nothing after them starts.
        """
        cancelled = self.store.cancel_run(run_id, cascade=cascade)
        for cancelled_id in cancelled:
            tell_waiters(self.app, self.store.get_run_document(cancelled_id))
        return cancelled

    def close(self) -> None:
        """Release connections to MongoDB and Redis."""
        self.store.db.client.close()
        self.app.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
