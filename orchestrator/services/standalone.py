"""`orchestrator standalone`: a whole local stack in the foreground, for daily use on one machine.

The role of `airflow standalone`, `prefect server start` or `temporal server start-dev`:
it uses the Redis and MongoDB it finds at `REDIS_URL` / `MONGO_URL`, or starts embedded ones
on those URLs' ports with their data kept under `ORCH_HOME` (Redis with an append-only file,
MongoDB-wire on SQLite files), so runs, workflows and queued messages survive a restart. It
then starts a worker, beat (schedules and the sweeper) and Flower as child processes, prints
the `export` lines for other shells, registers the example workflows that are not registered
yet, and on Ctrl-C or SIGTERM stops everything it started, in order.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from orchestrator.errors import ConfigurationError
from orchestrator.services.embedded import Service, mongo_answers, redis_answers, start_mongo, start_redis
from orchestrator.services.processes import spawn, stop_process
from orchestrator.settings import Settings
from orchestrator.urls import is_local, port_of, redact

WATCH_S = 0.5  # how often the children are checked while the stack runs
STOP_TIMEOUT_S = 20.0  # a warm shutdown of the worker may take this long before it is killed
UI_PORT = 8375  # the web UI's port, as `orchestrator ui` has it


@dataclass
class Child:
    """A process of the stack: a worker, beat or Flower."""

    name: str
    cmd: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        """Start it, its output going to its log file."""
        with self.log.open("ab") as output:
            self.process = spawn(self.cmd, output, env=env, cwd=cwd)

    def exit_code(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.process.poll() if self.process is not None else None

    def stop(self) -> None:
        """Stop it (a warm shutdown first) and whatever it forked."""
        if self.process is not None:
            stop_process(self.process, timeout=STOP_TIMEOUT_S)


def run_standalone(
    out: Console, err: Console, flower_port: int, concurrency: int | None, ui_port: int = UI_PORT
) -> int:
    """Run the stack until Ctrl-C or SIGTERM; the exit code (1 when a part stopped by itself)."""
    settings = Settings()
    home = settings.home.resolve()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with _stop_on_signals(stop), ExitStack() as stack:
        redis_url = _server(stack, err, "Redis", settings.redis_url, redis_answers, home, 6379)
        mongo_url = _server(stack, err, "MongoDB", settings.mongo_url, mongo_answers, home, 27017)
        settings = settings.model_copy(update={"redis_url": redis_url, "mongo_url": mongo_url})
        _register_examples(settings, err)
        auth = os.environ.get("FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
        env = {**os.environ, "REDIS_URL": redis_url, "MONGO_URL": mongo_url, "ORCH_HOME": str(home)}
        children = _children(logs, flower_port, concurrency, ui_port)
        for child in children:
            child.start({**env, "FLOWER_BASIC_AUTH": auth} if child.name == "flower" else env, home)
            stack.callback(child.stop)
        _print_summary(out, settings, home, (flower_port, ui_port), auth, children)
        while not stop.wait(WATCH_S):
            for child in children:
                code = child.exit_code()
                if code is not None:
                    err.print(f"{child.name} stopped (exit code {code}); see {child.log}. Stopping the rest.")
                    return 1
        err.print("Stopping the worker, beat, Flower, the UI and the services started here…")
    return 0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `stop` while the stack runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _server(
    stack: ExitStack,
    err: Console,
    what: str,
    url: str,
    answers: Callable[[str], bool],
    home: Path,
    default_port: int,
) -> str:
    """The URL of a server found running at `url`, or of an embedded one started on its port."""
    if answers(url):
        err.print(f"{what}: using the server found at {redact(url)}")
        return url
    if not is_local(url):
        raise ConfigurationError(
            f"{what} at {redact(url)} does not answer, and it is not on this machine, so no "
            f"embedded server can take its place: start it, or unset "
            f"{'REDIS_URL' if what == 'Redis' else 'MONGO_URL'}"
        )
    port = port_of(url, default_port)
    service: Service = (
        start_redis(home, port=port, persist=True)
        if what == "Redis"
        else start_mongo(home, database=Settings(MONGO_URL=url).mongo_database, port=port)
    )
    stack.callback(service.stop)
    err.print(f"{what}: started an embedded {service.name} at {redact(url)} (data under {home})")
    return url


def _children(logs: Path, flower_port: int, concurrency: int | None, ui_port: int) -> list[Child]:
    """The worker, beat, Flower and the UI, each an `orchestrator` command of this Python."""
    me = [sys.executable, "-m", "orchestrator"]
    worker = [*me, "worker", "--loglevel=INFO", *([f"--concurrency={concurrency}"] if concurrency else [])]
    return [
        Child("worker", worker, logs / "worker.log"),
        Child("beat", [*me, "beat", "--loglevel=INFO"], logs / "beat.log"),
        Child("flower", [*me, "flower", f"--port={flower_port}", "--address=127.0.0.1"], logs / "flower.log"),
        Child("ui", [*me, "ui", f"--port={ui_port}", "--host=127.0.0.1"], logs / "ui.log"),
    ]


def _register_examples(settings: Settings, err: Console) -> None:
    """Register the example workflows that are not registered yet (edits are kept)."""
    from orchestrator.api import Orchestrator
    from orchestrator.definitions.workflow_files import load_workflow_file
    from orchestrator.services.examples import example_files

    with Orchestrator(settings=settings) as orch:
        registered = orch.store.workflow_names()
        known = orch.node_types()
        added = 0
        for path in example_files():
            spec = load_workflow_file(path, known)
            if spec.name not in registered:
                orch.register(spec)
                added += 1
    if added:
        err.print(f"Registered {added} example workflows (examples/workflows/).")


def _print_summary(
    out: Console, settings: Settings, home: Path, ports: tuple[int, int], auth: str, children: list[Child]
) -> None:
    flower_port, ui_port = ports
    user, _, password = auth.partition(":")
    out.print(Text("The orchestrator runs. In another shell:", style="bold"))
    exports = {"REDIS_URL": settings.redis_url, "MONGO_URL": settings.mongo_url, "ORCH_HOME": str(home)}
    out.print("  export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in exports.items()))
    out.print('  orchestrator workflows list; orchestrator run "Daily Trading Pipeline" --wait')
    out.print(f"Runs (web UI): http://127.0.0.1:{ui_port}")
    out.print(f"Flower: http://127.0.0.1:{flower_port}  (user {user}, password {password})")
    out.print("Logs: " + ", ".join(f"{c.name} {c.log}" for c in children))
    out.print("Ctrl-C stops it all.")
