"""The `orchestrator` command: register workflows, run them, inspect runs, start services.

Exit codes: 0 success; 1 the run failed, errored, was cancelled or timed out, a service did
not answer, or an unexpected error (one line; `--debug` shows the traceback); 2 bad input,
with a message that says what and where.

Only what a command needs is imported: `--help` and the commands that read runs do not load
Celery or the node types.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from orchestrator.errors import (
    OrchestratorError,
    RunNotFound,
    TemplateError,
    WaitTimeout,
    WorkflowNotFound,
    WorkflowValidationError,
)
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.api import Orchestrator
    from orchestrator.models import Run

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
    from orchestrator.outages import service_error

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


def parse_vars(pairs: tuple[str, ...], as_json: str | None, max_bytes: int | None = None) -> dict[str, Any]:
    """`--vars JSON` then each `--var KEY=VALUE` (JSON when it parses, else a string).

    Variables no run could hold are refused (exit 2), each naming the variable: NaN and
    Infinity, integers past 64 bits, nesting past `spec.MAX_DEPTH`, text that is not UTF-8
    (a command line in another encoding), NUL in keys, and more than `max_bytes` in all
    (default: half of `ORCH_MAX_RUN_DOC_BYTES`, as the launcher allows).
    """
    variables: dict[str, Any] = {}
    if as_json:
        loaded = _json_option(as_json, "--vars")
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--vars")
        variables.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--var")
        try:
            variables[key] = _json_option(raw, f"--var {key}")
        except _NotJson:
            variables[key] = raw
    _check_variables(variables, max_bytes)
    return variables


class _NotJson(Exception):
    """A `--var` value that is not JSON: it is taken as a string."""


def _json_option(text: str, hint: str) -> Any:
    """The JSON in an option's value; `_NotJson` when it is not JSON, a `BadParameter` when it
    is JSON that a run cannot hold (NaN, a number past 4300 digits, deep nesting)."""
    from orchestrator.spec import MAX_DEPTH, load_json

    try:
        json.loads(text)  # JSON at all? (as Python reads it: `NaNcy` is not, `NaN` is)
    except json.JSONDecodeError as exc:
        if hint == "--vars":
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint=hint) from exc
        raise _NotJson() from exc
    except (ValueError, RecursionError):
        pass  # JSON, too large or deep to read: said below
    try:
        return load_json(text)  # strictly: no NaN, Infinity nor duplicate keys
    except RecursionError:
        raise click.BadParameter(f"nested more than {MAX_DEPTH} levels deep", param_hint=hint) from None
    except ValueError as exc:  # NaN, Infinity, a duplicate key, an integer past 4300 digits
        message = str(exc).split("; use sys.set_int_max_str_digits()")[0]
        raise click.BadParameter(message, param_hint=hint) from None


def _check_variables(variables: dict[str, Any], max_bytes: int | None) -> None:
    """Refuse variables that MongoDB or a run's document cannot hold."""
    import bson

    from orchestrator.spec import value_problems

    problems = value_problems(variables, most=1)
    if problems:
        loc, problem = problems[0]
        where = ".".join(str(p) for p in loc[:8]) or "(variables)"
        raise click.BadParameter(f"variable '{where}': {problem}", param_hint="--var/--vars")
    budget = cli_settings().max_run_doc_bytes // 2 if max_bytes is None else max_bytes
    size = len(bson.encode({"variables": variables}))
    if size > budget:
        raise click.BadParameter(
            f"the variables take {size / 1024:,.0f} KiB; a run's variables may take "
            f"{budget / 1024:,.0f} KiB, half its document's limit (ORCH_MAX_RUN_DOC_BYTES): pass "
            "identifiers (a symbol, a date, a key), not datasets",
            param_hint="--var/--vars",
        )


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


# -- workflows ------------------------------------------------------------------------------


@main.group()
def workflows() -> None:
    """Register and list workflow definitions."""


@workflows.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def workflows_apply(paths: tuple[Path, ...]) -> None:
    """Validate workflow files (YAML or JSON; a folder: all of its files, sub-folders too)
    and register them; nothing is registered when any is invalid."""
    from orchestrator.child_runs import unknown_targets
    from orchestrator.spec import load_workflow_file

    with connected() as orch:
        files = [p for path in paths for p in (workflow_files(path) if path.is_dir() else [path])]
        known_types = orch.node_types()
        budget = orch.settings.max_run_doc_bytes // 2  # a run's variables, as the launcher allows
        specs, problems = [], []
        for path in files:  # every file is checked before any is registered
            try:
                specs.append(load_workflow_file(path, known_types, max_variables_bytes=budget))
            except WorkflowValidationError as exc:
                problems += exc.problems
            except Exception as exc:  # a check that failed itself: still this file's problem
                problems.append(f"{path}: could not be checked: {type(exc).__name__}: {exc}")
        if problems:
            raise WorkflowValidationError("\n".join(problems), problems)
        for spec in specs:
            orch.register(spec)
            out.print(f"registered '{spec.name}' ({len(spec.nodes)} nodes)")
        registered = orch.store.workflow_names()
        for spec in specs:
            for warning in unknown_targets(spec, registered):
                err.print(Text.assemble(("warning: ", "yellow"), warning))


def workflow_files(folder: Path) -> list[Path]:
    """The workflow files (YAML or JSON) in a folder and its sub-folders, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


@workflows.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def workflows_list(as_json: bool) -> None:
    """List registered workflows."""
    with connected() as orch:
        specs = orch.workflows()
        if as_json:
            print_json([s.model_dump(mode="json") for s in specs])
            return
        for spec in specs:
            schedule = f"  (cron {spec.schedule.cron} {spec.schedule.timezone})" if spec.schedule else ""
            out.print(f"{spec.name}  {len(spec.nodes)} nodes{schedule}  {spec.description}")


# -- run ------------------------------------------------------------------------------------


@main.command("run")
@click.argument("name")
@click.option("--var", "pairs", multiple=True, metavar="KEY=VALUE", help="a variable (JSON when it parses)")
@click.option("--vars", "vars_json", metavar="JSON", help="variables as one JSON object")
@click.option("--wait", is_flag=True, help="wait for the run to end and show it")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    callback=lambda ctx, param, value: _finite_seconds(value),
    help="seconds to wait (with --wait)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (the run document with --wait)")
@click.option("--run-id", default=None, help="the new run's id: a second run with the same id starts nothing")
def run_command(
    name: str,
    pairs: tuple[str, ...],
    vars_json: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    run_id: str | None,
) -> None:
    """Start a run of workflow NAME."""
    variables = parse_vars(pairs, vars_json)
    with connected() as orch:
        orch.ping_broker()  # a run is stored only when it can be sent now
        run_id = orch.trigger(name, variables, trigger={"type": "cli"}, run_id=run_id)
        if not wait:
            print_json({"run_id": run_id}) if as_json else out.print(run_id)
            return
        try:
            run = wait_with_progress(orch, run_id, timeout, show=not as_json)
        except WaitTimeout as exc:
            run = orch.get_run(run_id)
            show_run(orch, run, as_json)
            fail(str(exc), 1)
        show_run(orch, run, as_json)
        if run.status != "finished":
            sys.exit(1)


def _finite_seconds(value: float | None) -> float | None:
    """`--timeout`: a number of seconds above 0 (the type checks), and not `inf` nor `nan`."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", param_hint="--timeout")
    return value


def wait_with_progress(orch: Orchestrator, run_id: str, timeout: float | None, show: bool) -> Run:
    """Wait for a run, with a one-line progress display on stderr."""
    if not show or not err.is_terminal:
        return orch.wait(
            run_id, timeout=timeout, on_progress=_plain_progress() if show else None, poll_s=PROGRESS_POLL_S
        )
    from orchestrator.display import progress_line

    with err.status(f"run {run_id} pending") as status:
        return orch.wait(
            run_id,
            timeout=timeout,
            on_progress=lambda run: status.update(progress_line(run)),
            poll_s=PROGRESS_POLL_S,
        )


def _plain_progress() -> Callable[[Run], None]:
    from orchestrator.display import progress_line

    last: list[str] = []

    def report(run: Run) -> None:
        line = progress_line(run)
        if not last or last[-1] != line:
            err.print(line)
            last.append(line)

    return report


def show_run(orch: Orchestrator, run: Run, as_json: bool) -> None:
    """Print a run (with its tree of children) as a tree or as JSON."""
    from orchestrator.display import run_view

    tree = orch.run_tree(run.id)
    if as_json:
        print_json(tree.to_document())
    else:
        out.print(run_view(tree))


# -- runs -----------------------------------------------------------------------------------


@main.group()
def runs() -> None:
    """Inspect and cancel runs."""


@runs.command("list")
@click.option("--workflow", default=None)
@click.option(
    "--status",
    default=None,
    type=click.Choice(["pending", "running", "finished", "failed", "error", "cancelled"]),
)
@click.option("--parent", default=None, help="only the child runs of this run")
@click.option("--limit", default=50, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
def runs_list(
    workflow: str | None, status: str | None, parent: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first."""
    with connected() as orch:
        from orchestrator.display import runs_view

        found = orch.list_runs(workflow=workflow, status=status, limit=limit, parent=parent)
        if as_json:
            print_json([r.to_document() for r in found])
        else:
            out.print(runs_view(found, out.width))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def runs_show(run_id: str, as_json: bool) -> None:
    """Show a run, its nodes and its tree of child runs (RUN_ID may be the start of an id)."""
    with connected() as orch:
        show_run(orch, orch.get_run(orch.store.resolve_run_id(run_id)), as_json)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--no-cascade", is_flag=True, help="leave its child runs going")
def runs_cancel(run_id: str, no_cascade: bool) -> None:
    """Cancel a run and (unless --no-cascade) its child runs (RUN_ID may be the start of an id)."""
    with connected() as orch:
        run_id = orch.store.resolve_run_id(run_id)
        cancelled = orch.cancel(run_id, cascade=not no_cascade)
        out.print(
            f"cancelled {len(cancelled)} run(s): {', '.join(cancelled)}"
            if cancelled
            else f"run {run_id} was already over"
        )


# -- lists ----------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def lists(ctx: click.Context, as_json: bool) -> None:
    """Named lists kept by `user_list` nodes; with no command, every list with its count."""
    if ctx.invoked_subcommand is not None:
        return
    from orchestrator.user_lists import UserLists

    with connected() as orch:
        counts = UserLists(orch.store.db).names()
        if as_json:
            print_json([{"list": name, "count": n} for name, n in counts.items()])
            return
        for name, n in counts.items():
            out.print(Text.assemble((name, "bold"), f"  {n} item{'' if n == 1 else 's'}"))


@lists.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def lists_show(name: str, as_json: bool) -> None:
    """Show the items of list NAME, oldest first (exit 2 when no such list was ever written)."""
    from orchestrator.user_lists import UserLists

    with connected() as orch:
        store = UserLists(orch.store.db)
        if not store.exists(name):
            fail(f"no list named '{name}' (lists are created by a user_list node's first write)", 2)
        items = store.read(name)
        if as_json:
            print_json({"list": name, "items": items, "count": len(items)})
            return
        out.print(Text.assemble((name, "bold"), f"  {len(items)} item{'' if len(items) == 1 else 's'}"))
        for index, item in enumerate(items):
            out.print(Text(f"{index:>4}  ") + Text(json.dumps(item, default=str, ensure_ascii=False)))


# -- processes ------------------------------------------------------------------------------


@main.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="worker processes/threads (default: CPU count)"
)
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork")
@click.option("--queues", "-Q", default=None, help="comma-separated queues to consume")
@click.option("--loglevel", "-l", default="INFO")
@click.option("--hostname", "-n", default=None)
def worker(
    concurrency: int | None, pool: str, queues: str | None, loglevel: str, hostname: str | None
) -> None:
    """Start a Celery worker that runs workflow nodes."""
    from orchestrator.factory import create_app

    argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}", "--task-events"]
    argv += [f"--concurrency={concurrency}"] if concurrency else []
    argv += [f"--queues={queues}"] if queues else []
    argv += [f"--hostname={hostname}"] if hostname else []
    create_app().worker_main(argv)


@main.command()
@click.option("--loglevel", "-l", default="INFO")
def beat(loglevel: str) -> None:
    """Start celery beat, which fires scheduled workflows.

    Schedules are read from the registered workflows every ORCH_SCHEDULE_REFRESH_S seconds;
    any number of beat processes may run (each slot fires once).
    """
    from orchestrator.factory import create_app
    from orchestrator.schedules import SCHEDULER

    app = create_app()
    app.store.ping()  # fail now, with a message, rather than log errors forever
    app.start(["beat", f"--loglevel={loglevel}", f"--scheduler={SCHEDULER}"])


@main.command()
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--concurrency", "-c", type=int, default=None, help="worker processes (default: CPU count)")
def standalone(flower_port: int, concurrency: int | None) -> None:
    """Run a local stack in the foreground: Redis and MongoDB (found at REDIS_URL / MONGO_URL,
    or embedded with their data under ORCH_HOME), a worker, beat and Flower.

    It prints the `export` lines that point other shells at it, registers the example
    workflows not registered yet, and stops everything it started on Ctrl-C or SIGTERM.
    """
    from orchestrator.standalone import run_standalone

    sys.exit(run_standalone(out, err, flower_port, concurrency))


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--no-auth", is_flag=True, help="no password (only behind your own proxy or on localhost)")
def flower(port: int, address: str, no_auth: bool) -> None:
    """Run Flower (Celery's monitor) against the configured broker.

    Basic auth from FLOWER_BASIC_AUTH (user:password); without it a password is made up and
    printed, unless --no-auth.
    """
    import secrets

    from orchestrator.factory import create_app

    if no_auth:
        os.environ.pop("FLOWER_BASIC_AUTH", None)
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "1"
    elif not os.environ.get("FLOWER_BASIC_AUTH"):
        os.environ["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
        password = os.environ["FLOWER_BASIC_AUTH"].partition(":")[2]
        err.print(f"Flower: user admin, password {password} (set FLOWER_BASIC_AUTH=user:password to choose)")
    create_app().start(["flower", f"--address={address}", f"--port={port}"])


@main.command()
@click.option("--timeout", type=float, default=120.0, help="seconds to wait for the demo run")
@click.option("--workflow", default="Daily Trading Pipeline", help="which example workflow to run")
def demo(timeout: float, workflow: str) -> None:
    """Run the example pipeline end to end, starting whatever is not running."""
    from orchestrator.demo import run_demo

    sys.exit(run_demo(out, err, timeout, workflow))


# Commands that run until stopped: they end through the interpreter's usual exit.
SERVICE_COMMANDS = frozenset({"worker", "beat", "flower", "standalone", "demo"})


def entry() -> NoReturn:
    """The `orchestrator` console script: `main`, then, for the commands that only talk to the
    services, an exit that skips the interpreter's shutdown. That shutdown joins pymongo's
    monitor threads, which sleep in 0.5 s steps: 0.5 to 1 s added to every command, after its
    output is flushed and its connections are closed."""
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    if command in SERVICE_COMMANDS or not isinstance(code, int | None):
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
