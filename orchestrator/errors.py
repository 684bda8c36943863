"""The errors the package raises: one root, shallow subtrees, messages a user can act on."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error this package raises."""


class ConfigurationError(OrchestratorError):
    """A setting is missing or wrong (environment, settings file, a service that does not answer)."""


class WorkflowValidationError(OrchestratorError):
    """A workflow definition is invalid; the message names the workflow, node and field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class WorkflowNotFound(OrchestratorError):
    """No workflow with that name is registered."""


class TemplateError(OrchestratorError):
    """A `{{ template }}` could not be rendered: syntax, an undefined name or a sandbox violation."""


class NodeError(OrchestratorError):
    """A node could not do its work; the message says which node and why."""


class NodeTimeout(NodeError):
    """A node ran past its `timeout_s`."""


class StoreError(OrchestratorError):
    """The run store could not do what was asked."""


class RunNotFound(StoreError):
    """No run with that id exists."""


class RunStillActive(OrchestratorError):
    """A run asked to be removed is still active, or a run in its tree is: cancel it first."""


class DocumentTooLarge(StoreError):
    """A node's output would push its run document past the configured size limit."""


class ServiceUnavailable(OrchestratorError):
    """Redis or MongoDB did not answer; the message names the URL (without its password)
    and what to do."""

    def __init__(self, service: str, url: str, variable: str, detail: str = "") -> None:
        super().__init__(
            f"{service} at {url} did not answer{f' ({detail})' if detail else ''}: start it, run "
            f"`orchestrator standalone` for a local stack, or set {variable} to a server that runs"
        )
        self.service = service
        self.url = url


class RunNotSent(ServiceUnavailable):
    """A run was stored but its first message could not reach Redis. The run is not lost:
    the sweeper (`orchestrator beat`) sends it once Redis answers, and triggering again with
    the same `run_id` never makes a second run."""

    def __init__(self, run_id: str, url: str, detail: str = "") -> None:
        ServiceUnavailable.__init__(self, "Redis", url, "REDIS_URL", detail)
        self.args = (
            f"run {run_id} is stored but could not be sent: {self}. It is sent once Redis is "
            f"back, by the sweeper of `orchestrator beat`; a trigger again with run_id={run_id!r} "
            "never makes a second run",
        )
        self.run_id = run_id


class WaitTimeout(OrchestratorError):
    """`Orchestrator.wait` gave up before the run was over; the run itself goes on."""

    def __init__(self, run_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"run {run_id} is still {status} after {timeout:g} s; it goes on "
            f"(see `orchestrator runs show {run_id}`)"
        )
        self.run_id = run_id
        self.timeout = timeout
        self.status = status
