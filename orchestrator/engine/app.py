"""The Celery app of the orchestrator: one per process, built by `orchestrator.engine.factory`.

The app carries the settings, the node-type registry and (made lazily, after any fork) the
run store, so tasks find them through `self.app` rather than through module globals.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from celery.canvas import Signature

from orchestrator.constants import NODE_LOGS, WORKFLOW_VERSIONS
from orchestrator.definitions.secrets import SecretMask
from orchestrator.engine.compiler import compile_workflow
from orchestrator.engine.leases import LeaseKeeper
from orchestrator.engine.log_capture import NodeLogCapture
from orchestrator.engine.registry import NodeContext, Registry
from orchestrator.engine.segments import TailCache
from orchestrator.errors import OrchestratorError, WorkflowNotFound
from orchestrator.settings import Settings
from orchestrator.store.run_store import RunStore, open_store
from orchestrator.store.spec_versions import SpecCache


class RunResultBackend(RedisBackend):  # type: ignore[misc]
    """The Redis result backend, without result subscriptions.

    Runs are watched through their MongoDB documents, never through `AsyncResult.get()`.
    Celery's Redis backend subscribes to the result channel of every task it sends and of
    every member of a group it freezes: a round trip per trigger and subscriptions that pile
    up in long-lived processes. Here nothing subscribes; `AsyncResult.state` and `.ready()`
    still work (they read the stored result).
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def _add_pending_result(self, task_id: str, result: Any, weak: bool = False) -> None:
        return None

    def wait_for_pending(self, result: Any, **kwargs: Any) -> Any:
        raise OrchestratorError(
            "AsyncResult.get() is not supported on the orchestrator's app: watch the run "
            "document instead (Orchestrator.wait), or poll AsyncResult.ready()"
        )


class OrchestratorApp(Celery):  # type: ignore[misc]
    """A Celery app that knows the orchestrator's settings, node types and store."""

    def __init__(self, settings: Settings, registry: Registry, **kwargs: Any) -> None:
        super().__init__("orchestrator", set_as_current=False, **kwargs)
        self.settings = settings
        self.registry = registry

    def _get_backend(self) -> RunResultBackend:
        return RunResultBackend(app=self, url=self.conf.result_backend)

    @cached_property
    def secret_mask(self) -> SecretMask:
        """Masks the secrets this process holds (its secret settings, and every environment
        variable named like a secret) in what nodes record and in log lines."""
        settings = self.settings
        secrets = [
            settings.telegram_bot_token,
            settings.twelvedata_api_key,
            settings.ui_password,
            settings.ui_token,
        ]
        return SecretMask.of_process([s.get_secret_value() for s in secrets if s is not None])

    @cached_property
    def node_log_capture(self) -> NodeLogCapture:
        """Keeps what the nodes this process runs log, in their node logs."""
        return NodeLogCapture(lambda: self.store.db[NODE_LOGS], self.secret_mask.text)

    @cached_property
    def specs(self) -> SpecCache:
        """The workflow definitions runs started with, by digest, read once per process."""
        return SpecCache(self.store.db[WORKFLOW_VERSIONS], self.store.workflows)

    @cached_property
    def chain_tails(self) -> TailCache:
        """The canvases of the runs whose chains this process continues (`orchestrator.engine.segments`)."""
        return TailCache(self._whole_canvas)

    def _whole_canvas(self, run_id: str, digest: str, epoch: int) -> Signature:
        spec = self.specs.by_digest(digest)
        if spec is None:
            raise WorkflowNotFound(f"run {run_id}: its workflow version {digest} is not stored")
        handed = self.registry.handed_types(node.type for node in spec.nodes)
        return compile_workflow(self, spec, run_id, handed, epoch=epoch)

    @cached_property
    def leases(self) -> LeaseKeeper:
        """The renewer of the leases of the nodes this process runs."""
        return LeaseKeeper(self.store, self.settings.lease_s)

    @cached_property
    def store(self) -> RunStore:
        """The run store; its MongoDB client is made on first use, in the using process."""
        return open_store(self.settings)


def app_of(context: NodeContext) -> OrchestratorApp:
    """The orchestrator's app a node runs in, for node types that start runs."""
    if not isinstance(context.app, OrchestratorApp):
        raise OrchestratorError(f"node '{context.node_id}' runs outside an orchestrator worker")
    return context.app
