"""The `orchestrator` command's frame: its group, consoles, error handling and connection.

Exit codes: 0 success; 1 the run failed, errored, was cancelled or timed out, a service did
not answer, or an unexpected error (one line; `--debug` shows the traceback); 2 bad input,
with a message that says what and where.

Only what a command needs is imported: `--help` and the commands that read runs do not load
Celery or the node types.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from orchestrator.errors import (
    OrchestratorError,
    RunNotFound,
    TemplateError,
    WorkflowNotFound,
    WorkflowValidationError,
)
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.api import Orchestrator
BAD_INPUT = (WorkflowValidationError, WorkflowNotFound, RunNotFound, TemplateError)
PROGRESS_POLL_S = 0.5  # how often `run --wait` refreshes its progress line
CLI_CONNECT_TIMEOUT_S = 1.0  # a command says a service is down after this, unless told otherwise
WIDE = 10_000  # the width of output that does not go to a terminal: nothing is cut


def _console(stderr: bool = False) -> Console:
    """A console that never reads markup in what it prints (names come from users) and never
    cuts a line when the output is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():  # lines wrap at the terminal's width
        return Console(stderr=stderr, highlight=False, markup=False)
    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True, width=WIDE)


out = _console()
err = _console(stderr=True)


def fail(message: str, code: int) -> NoReturn:
    """Print the message on stderr and exit with `code`."""
    err.print(Text.assemble(("error: ", "red"), message))
    sys.exit(code)


def _debugging() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


@contextmanager
def handled(settings: Settings | None = None) -> Iterator[None]:
    """Turn every error into one line and an exit code: the outside world (a service that does
    not answer) and the package's errors; anything else too, with its traceback only under
    `--debug`."""
    from orchestrator.engine.outages import service_error

    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt):
        raise
    except Exception as exc:
        outage = service_error(exc, settings or Settings())
        if outage is not None:
            fail(str(outage), 1)
        if isinstance(exc, BAD_INPUT):
            fail(str(exc), 2)
        if isinstance(exc, OrchestratorError):
            fail(str(exc), 1)
        if _debugging():
            raise
        fail(
            f"unexpected {type(exc).__name__}: {exc} (run with `orchestrator --debug …` for the traceback)", 1
        )


class OrchestratorGroup(click.Group):
    """The command group: every command's errors go through `handled`."""

    def invoke(self, ctx: click.Context) -> Any:
        with handled():
            return super().invoke(ctx)


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    click.echo(json.dumps(data, indent=2, default=str))


def cli_settings() -> Settings:
    """The settings from the environment; a service that does not answer is reported after
    `CLI_CONNECT_TIMEOUT_S` unless `ORCH_CONNECT_TIMEOUT_S` says otherwise."""
    settings = Settings()
    if "connect_timeout_s" not in settings.model_fields_set:
        settings = settings.model_copy(update={"connect_timeout_s": CLI_CONNECT_TIMEOUT_S})
    return settings


@contextmanager
def connected() -> Iterator[Orchestrator]:
    """An `Orchestrator` from the environment, closed afterwards; errors become exit codes."""
    from orchestrator.api import Orchestrator

    settings = cli_settings()
    with handled(settings), Orchestrator(settings=settings) as orch:
        yield orch


@click.group(cls=OrchestratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="celery-orchestrator")
@click.option("--debug", is_flag=True, help="show the traceback of an unexpected error")
def main(debug: bool) -> None:
    """Workflow orchestration on Celery."""
