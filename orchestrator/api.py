"""The Python API: `Orchestrator` registers workflows, triggers runs and reads them back.

Reading runs and workflows needs only MongoDB: the Celery app (and Celery itself) is made
on first use, by the calls that send messages or wait on Redis, so that commands which only
read start fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.constants import NODE_LOGS
from orchestrator.definitions.spec import WorkflowSpec, parse_workflow
from orchestrator.definitions.workflow_files import load_workflow_file
from orchestrator.engine.outages import service_error
from orchestrator.errors import OrchestratorError, RunNotSent, ServiceUnavailable, WaitTimeout
from orchestrator.settings import Settings
from orchestrator.store.history import RunFilter, RunPage
from orchestrator.store.models import Run, new_run_id, utcnow
from orchestrator.store.node_logs import NodeLog, read_logs
from orchestrator.store.retention import Removed, delete, prune
from orchestrator.store.run_store import open_store
from orchestrator.urls import redact

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp
    from orchestrator.engine.registry import Registry


def _ids(**named: object) -> None:
    """Refuse ids that are not strings (a dict such as `{"$regex": "."}` would reach MongoDB as
    an operator and match other runs)."""
    for what, value in named.items():
        if value is not None and not isinstance(value, str):
            raise OrchestratorError(f"{what.replace('_', ' ')} must be a string, not {type(value).__name__}")


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
        if app is not None:
            self.__dict__["app"] = app
        self.store = app.store if app is not None else open_store(settings)
        try:
            self.store.ensure_indexes()
        except BaseException:
            self.close()  # its monitor threads would hold the process's exit
            raise

    @cached_property
    def app(self) -> OrchestratorApp:
        """The Celery app, made on first use; it shares this object's run store."""
        from orchestrator.engine.factory import create_app

        app = create_app(self.settings)
        app.__dict__["store"] = self.store  # one MongoDB client, not two
        return app

    def ping_broker(self) -> None:
        """Raise `ServiceUnavailable` when Redis does not answer (within the connect timeout)."""
        import redis

        timeout = self.settings.connect_timeout_s
        client = redis.Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            raise ServiceUnavailable("Redis", redact(self.settings.redis_url), "REDIS_URL", str(exc)) from exc
        finally:
            client.close()

    def register(self, source: str | Path | Mapping[str, Any] | WorkflowSpec) -> WorkflowSpec:
        """Validate a workflow (a file path, a dict or a spec) and store it under its name.

        Raises:
            WorkflowValidationError: the workflow is invalid (every problem listed, each with
                its file, node and field); nothing is stored.
        """
        from orchestrator.errors import WorkflowValidationError

        known = self.node_types()
        budget = self.settings.max_run_doc_bytes // 2  # a run's variables, as the launcher allows
        if isinstance(source, WorkflowSpec):
            data = source.model_dump(mode="json", exclude_defaults=True)
            spec = parse_workflow(data, known, max_variables_bytes=budget)
        elif isinstance(source, Mapping):
            spec = parse_workflow(source, known, max_variables_bytes=budget)
        elif isinstance(source, str | Path):
            spec = load_workflow_file(source, known, max_variables_bytes=budget)
        else:
            raise WorkflowValidationError(
                f"cannot register a {type(source).__name__}: give a file path, a mapping or a WorkflowSpec"
            )
        self.store.save_workflow(spec)
        return spec

    def node_types(self) -> Registry:
        """The node types workflows may use (their modules are imported only when asked about)."""
        if "app" in self.__dict__:
            return self.app.registry
        from orchestrator.engine.registry import load_registry

        return load_registry(tuple(self.settings.plugin_modules))

    def workflows(self) -> list[WorkflowSpec]:
        """Every registered workflow."""
        return self.store.list_workflows()

    def trigger(
        self,
        name: str,
        variables: Mapping[str, Any] | None = None,
        trigger: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Start a run of a registered workflow and return its id at once.

        Args:
            run_id: the new run's id (an idempotency key): a second trigger with the same id
                starts nothing and returns it.

        Raises:
            RunNotSent: the run is stored but Redis did not take its first message; it is
                sent later (by the sweeper, or by a trigger with the same `run_id`).
        """
        from orchestrator.engine.launcher import launch_run

        _ids(workflow_name=name, run_id=run_id)
        spec = self.store.get_workflow(name)
        run_id = run_id or new_run_id()
        try:
            launch_run(self.app, spec, dict(variables or {}), dict(trigger or {"type": "api"}), run_id=run_id)
        except Exception as exc:
            outage = service_error(exc, self.settings)
            if outage is not None and outage.service == "Redis":
                raise RunNotSent(run_id, redact(self.settings.redis_url), str(exc).splitlines()[0]) from exc
            raise
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
        from orchestrator.engine.run_ends import RunEndListener

        _ids(run_id=run_id)
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
        _ids(run_id=run_id)
        return self.store.get_run(run_id)

    def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[Run]:
        """Runs, newest first."""
        _ids(workflow_name=workflow, status=status, parent_run_id=parent)
        return self.store.list_runs(workflow=workflow, status=status, parent_run_id=parent, limit=limit)

    def run_tree(self, run_id: str) -> Run:
        """The run with its child runs in `children`, recursively."""
        _ids(run_id=run_id)
        return self.store.run_tree(run_id)

    def cancel(self, run_id: str, cascade: bool = True) -> list[str]:
        """Cancel a run (and, with `cascade`, its active descendants); the ids cancelled.

        Its running nodes are stopped where they run (their tasks revoked and terminated),
        its waiting nodes end as `cancelled`, and nothing recorded afterwards changes it.
        """
        from orchestrator.engine.cancel import cancel_run

        _ids(run_id=run_id)
        return cancel_run(self.app, run_id, cascade=cascade)

    def page_runs(
        self, where: RunFilter | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        """A page of runs matching `where`, newest first, after `cursor` (the `next_cursor` of
        the page before); served by an index whatever the filters."""
        return self.store.page_runs(where or RunFilter(), limit, cursor)

    def logs(self, run_id: str, node_id: str | None = None) -> list[NodeLog]:
        """What the run's nodes (or one node) logged, by node and attempt: the last 64 KiB of
        each attempt, with the count of lines cut before them."""
        _ids(run_id=run_id, node_id=node_id)
        return read_logs(self.store.db[NODE_LOGS], run_id, node_id)

    def rerun(self, run_id: str, from_failed: bool = False, from_node: str | None = None) -> str:
        """Run a run's workflow again with its variables; the new run's id.

        The new run is linked to the old one (`rerun_of`). With `from_failed`, it keeps the
        outputs of the nodes that finished and runs only the others (the failed ones and
        those after them); with `from_node`, it runs that node and every node after it.
        """
        from orchestrator.engine.reruns import rerun

        _ids(run_id=run_id, node_id=from_node)
        return rerun(self.app, run_id, from_failed=from_failed, from_node=from_node)

    def delete_workflow(self, name: str, force: bool = False) -> None:
        """Remove a registered workflow (its runs stay). Refused (`OrchestratorError`) while it
        has active runs, unless `force`: those runs then cannot be resumed after a crash."""
        from orchestrator.engine.reruns import delete_workflow

        _ids(workflow_name=name)
        delete_workflow(self.store, name, force=force)

    def prune_runs(
        self,
        older_than: timedelta,
        *,
        workflow: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        on_progress: Callable[[Removed, int], None] | None = None,
    ) -> Removed:
        """Remove runs created more than `older_than` ago that are over, each top-level run
        with its tree of child runs, their node logs and wait records. A tree in which a run
        is still active is kept whole (`Removed.kept_active`).

        Args:
            workflow: only top-level runs of this workflow (their trees go whole).
            statuses: only top-level runs that ended so (default: finished, failed, error,
                cancelled).
            limit: look at this many top-level runs at most, the oldest first.
            dry_run: count what would go, remove nothing.
            on_progress: called as the work goes, with what is removed so far and how many
                top-level runs were found.
        """
        _ids(workflow_name=workflow)
        if older_than < timedelta(0):
            raise OrchestratorError(f"older_than must not be negative, not {older_than}")
        before = utcnow() - older_than
        return prune(
            self.store,
            before,
            workflow=workflow,
            statuses=statuses,
            limit=limit,
            dry_run=dry_run,
            on_progress=on_progress,
        )

    def delete_runs(self, run_ids: Iterable[str]) -> Removed:
        """Remove these top-level runs, each with its tree of child runs, their node logs and
        wait records; all or none. Refused (`OrchestratorError`) for a run that another run
        started, and (`RunStillActive`) while a run of a tree is active: cancel it first."""
        ids = list(run_ids)
        for run_id in ids:
            _ids(run_id=run_id)
        return delete(self.store, ids)

    def close(self) -> None:
        """Release connections to MongoDB and Redis."""
        self.store.db.client.close()
        if "app" in self.__dict__:
            self.app.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
