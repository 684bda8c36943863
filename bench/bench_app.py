"""The Celery app the benchmark's worker runs: the orchestrator's own app plus `bench.noop`.

Started as `celery -A bench.bench_app worker` by `bench/engine.py`, with `REDIS_URL`,
`MONGO_URL` and `BENCH_QUEUE` in its environment. The no-op task is the raw-Celery baseline;
the orchestrator's node tasks (`workers.set`, …) are registered by `create_app` as usual.
"""

from __future__ import annotations

import os

from orchestrator.engine.factory import create_app

QUEUE_ENV = "BENCH_QUEUE"

app = create_app()
# A queue of the benchmark's own, so other workers on a shared Redis take none of its tasks.
app.conf.task_default_queue = os.environ.get(QUEUE_ENV, "celery")


@app.task(name="bench.noop", shared=False)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Do nothing: one step of the raw-Celery chain."""
