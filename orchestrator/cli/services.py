"""The commands that start processes: worker, beat, standalone, Flower, the UI, the demo."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from orchestrator.cli.base import err, main, out
from orchestrator.settings import Settings


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
    from orchestrator.engine.factory import create_app

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
    from orchestrator.engine.factory import create_app
    from orchestrator.engine.schedules import SCHEDULER

    app = create_app()
    app.store.ping()  # fail now, with a message, rather than log errors forever
    app.start(["beat", f"--loglevel={loglevel}", f"--scheduler={SCHEDULER}"])


@main.command()
@click.option(
    "--port",
    "ui_port",
    type=click.IntRange(1, 65535),
    default=8375,
    show_default=True,
    help="the web UI's port",
)
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--concurrency", "-c", type=int, default=None, help="worker processes (default: CPU count)")
def standalone(ui_port: int, flower_port: int, concurrency: int | None) -> None:
    """Run a local stack in the foreground: Redis and MongoDB (found at REDIS_URL / MONGO_URL,
    or embedded with their data under ORCH_HOME), a worker, beat, Flower and the web UI.

    It prints the `export` lines that point other shells at it, registers the example
    workflows not registered yet, and stops everything it started on Ctrl-C or SIGTERM.
    """
    from orchestrator.services.standalone import run_standalone

    sys.exit(run_standalone(out, err, flower_port, concurrency, ui_port))


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

    from orchestrator.engine.factory import create_app

    if no_auth:
        os.environ.pop("FLOWER_BASIC_AUTH", None)
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "1"
    elif not os.environ.get("FLOWER_BASIC_AUTH"):
        os.environ["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
        password = os.environ["FLOWER_BASIC_AUTH"].partition(":")[2]
        err.print(f"Flower: user admin, password {password} (set FLOWER_BASIC_AUTH=user:password to choose)")
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    state = settings.home.resolve() / "flower.db"  # what it saw survives its restarts
    create_app().start(
        ["flower", f"--address={address}", f"--port={port}", "--persistent=True", f"--db={state}",
         "--state_save_interval=60000"]
    )  # fmt: skip


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8375, show_default=True)
def ui(host: str, port: int) -> None:
    """Serve the run-history web UI: runs, their graphs, logs and lineage, workflows.

    It listens on localhost unless told otherwise; any other address needs ORCH_UI_PASSWORD
    (basic auth) or ORCH_UI_TOKEN.
    """
    from orchestrator.ui.server import serve

    serve(Settings(), host=host, port=port)


@main.command()
@click.option("--timeout", type=float, default=120.0, help="seconds to wait for the demo run")
@click.option("--workflow", default="Daily Trading Pipeline", help="which example workflow to run")
def demo(timeout: float, workflow: str) -> None:
    """Run the example pipeline end to end, starting whatever is not running."""
    from orchestrator.services.demo import run_demo

    sys.exit(run_demo(out, err, timeout, workflow))


# Commands that run until stopped: they end through the interpreter's usual exit.
SERVICE_COMMANDS = frozenset({"worker", "beat", "flower", "standalone", "demo", "ui"})


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
