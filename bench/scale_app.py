"""The Celery app of `bench/scale.py`'s worker: bench/bench_app.py's app, counted.

Started as `celery -A bench.scale_app worker` with `REDIS_URL`, `MONGO_URL`, `BENCH_QUEUE`,
`BENCH_COUNTS_URL` and `BENCH_COUNTS_KEY` in its environment. Importing this module installs
the counting of `bench.counters` (a global pymongo command listener and two Celery signal
handlers) *before* the app, and so before any MongoDB client, exists: that order is the
point of the module, and the one import-time side effect it allows itself.
"""

from __future__ import annotations

from bench import counters

counters.install()

from bench.bench_app import app  # noqa: E402

__all__ = ["app"]
