"""`orchestrator demo`: the example workflow end to end, with whatever is missing embedded.

With no Redis or MongoDB answering at `REDIS_URL` / `MONGO_URL`, it starts a private
`redis-server` and `nx-27017` (data under `ORCH_HOME`) and runs a worker in this process.
"""

from __future__ import annotations

from pathlib import Path

from celery.contrib.testing.worker import start_worker
from rich.console import Console

from orchestrator.api import Orchestrator
from orchestrator.display import progress_line, run_view
from orchestrator.embedded import services
from orchestrator.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "workflows"
DEMO_WORKFLOW = "Price Summary"


def run_demo(out: Console, err: Console, timeout: float) -> int:
    """Run the demo workflow and print its run tree; the exit code (0 when it finished)."""
    settings = Settings()
    with services(settings.home, settings.redis_url, settings.mongo_url) as (redis_url, mongo_url, started):
        if started:
            err.print(
                f"No {' or '.join(_what(s) for s in started)} reachable: "
                f"using an embedded {' and '.join(started)} "
                f"(data under {settings.home}) with an in-process worker."
            )
        settings = settings.model_copy(update={"redis_url": redis_url, "mongo_url": mongo_url})
        orch = Orchestrator(settings=settings)
        for path in sorted(EXAMPLES.glob("*.yaml")):
            orch.register(path)
        with start_worker(
            orch.app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING"
        ):
            run_id = orch.trigger(DEMO_WORKFLOW, trigger={"type": "cli"})
            with err.status(f"{DEMO_WORKFLOW}: starting") as status:
                run = orch.wait(
                    run_id, timeout=timeout, on_progress=lambda r: status.update(progress_line(r))
                )
            out.print(run_view(orch.run_tree(run.id)))
        orch.close()
        return 0 if run.status == "finished" else 1


def _what(service: str) -> str:
    return "Redis" if service.startswith("redis") else "MongoDB"
