"""`orchestrator demo`: the daily trading pipeline end to end, with whatever is missing embedded.

With no Redis or MongoDB answering at `REDIS_URL` / `MONGO_URL`, it starts a private
`redis-server` and `nx-27017` (data under `ORCH_HOME`) and runs a worker in this process.
It registers every example workflow, runs one (by default "Daily Trading Pipeline", which
needs no network: synthetic candles, and the report goes to the log without a Telegram
token), waits for its fire-and-forget children too, and prints the run tree and the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery.contrib.testing.worker import start_worker
from rich.console import Console

from orchestrator.api import Orchestrator
from orchestrator.constants import RUN_OVER
from orchestrator.services.embedded import Stack, private_stack
from orchestrator.services.examples import example_files
from orchestrator.settings import Settings
from orchestrator.store.models import Run
from orchestrator.views.display import progress_line, run_view

DEMO_WORKFLOW = "Daily Trading Pipeline"


def run_demo(out: Console, err: Console, timeout: float, workflow: str = DEMO_WORKFLOW) -> int:
    """Run an example workflow and print its run tree; the exit code (0 when all finished)."""
    settings = Settings()
    home = settings.home.resolve() / "demo"
    with private_stack(home, settings.redis_url, settings.mongo_url, "orchestrator_demo") as stack:
        _say_where(err, stack, home)
        settings = settings.model_copy(update={"redis_url": stack.redis_url, "mongo_url": stack.mongo_url})
        with Orchestrator(settings=settings) as orch:
            for path in example_files():
                orch.register(path)
            with start_worker(
                orch.app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING"
            ):
                run_id = orch.trigger(workflow, trigger={"type": "cli"})
                deadline = time.monotonic() + timeout
                with err.status(f"{workflow}: starting") as status:
                    run = orch.wait(
                        run_id, timeout=timeout, on_progress=lambda r: status.update(_progress(orch, r))
                    )
                    children = _wait_for_descendants(orch, run, deadline, lambda text: status.update(text))
                tree = orch.run_tree(run.id)
                out.print(run_view(tree))
                _print_report(out, children)
        if stack.borrowed:
            err.print(f"The demo's data was removed from {' and '.join(stack.borrowed)}.")
        ok = run.status == "finished" and all(c.status == "finished" for c in children)
        return 0 if ok else 1


def _say_where(err: Console, stack: Stack, home: Path) -> None:
    """Which servers the demo uses: embedded ones it started, or a namespace in running ones."""
    if stack.started:
        names = [s.name for s in stack.started]
        err.print(
            f"No {' or '.join(_what(n) for n in names)} reachable: using an embedded {' and '.join(names)} "
            f"(files under {home}) with an in-process worker.",
            markup=False,
        )
    if stack.borrowed:
        err.print(f"Using {' and '.join(stack.borrowed)}, removed at the end.", markup=False)


def _progress(orch: Orchestrator, run: Run) -> str:
    """The run's progress line, with how many of its child runs (at any depth) are over."""
    children = list(orch.store.descendants(run.id))
    over = sum(1 for c in children if c.status in RUN_OVER)
    return f"{progress_line(run)}; child runs: {over}/{len(children)} over"


def _wait_for_descendants(orch: Orchestrator, run: Run, deadline: float, show: Any) -> list[Run]:
    """Wait until the fire-and-forget children (which the run did not wait for) are over too."""
    while True:
        children = list(orch.store.descendants(run.id))
        running = [c.workflow for c in children if c.status not in RUN_OVER]
        if not running or time.monotonic() > deadline:
            return children
        show(f"{run.workflow} {run.status}; waiting for child runs: {', '.join(running)}")
        time.sleep(0.1)


def _print_report(out: Console, children: list[Run]) -> None:
    """The Markdown of the pipeline's report, when it made one."""
    for child in children:
        report = child.nodes.get("report")
        output = report.output if report else None
        if isinstance(output, dict) and isinstance(output.get("markdown"), str):
            out.rule(str(output.get("title") or "report"))
            out.print(output["markdown"], markup=False, highlight=False)


def _what(service: str) -> str:
    return "Redis" if service.startswith("redis") else "MongoDB"
