"""How long `orchestrator runs prune` takes on a long history (nx-27017, in memory).

Inserts `--runs` run documents straight into a private nx-27017 (those of
`bench/ui_runs_list.py`: spread over 30 days, a fifth of them child runs of top-level ones),
then times a dry run and the prune itself of the runs older than `--days`, and prints the
trees and runs per second of each. The store's own time dominates: per 1,000 trees, one
query for their runs and statuses, then the removal of their logs, wait records and runs.

    .venv/bin/python bench/retention.py [--runs 100000] [--days 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from orchestrator.api import Orchestrator
from orchestrator.services.embedded import start_mongo
from orchestrator.settings import Settings
from orchestrator.store.retention import Removed

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `bench` is not an installed package
    sys.path.insert(0, str(REPO))

from bench.ui_runs_list import insert_runs  # noqa: E402


def timed(orch: Orchestrator, days: float, dry_run: bool) -> tuple[Removed, float]:
    """One prune of the runs older than `days` (or its dry run), and the seconds it took."""
    start = time.perf_counter()
    removed = orch.prune_runs(timedelta(days=days), dry_run=dry_run)
    return removed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000, help="runs stored first (default 100,000)")
    parser.add_argument("--days", type=float, default=1.0, help="prune runs older than this (default 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as home:
        mongo = start_mongo(Path(home), database="retention_bench", in_memory=True)
        try:
            with Orchestrator(settings=Settings(MONGO_URL=mongo.url, ORCH_HOME=home)) as orch:
                took = insert_runs(orch, args.runs)
                print(f"inserted {args.runs:,} runs in {took:.1f} s (nx-27017, in memory)")
                for dry_run in (True, False):
                    removed, seconds = timed(orch, args.days, dry_run)
                    print(
                        f"{'dry run' if dry_run else 'prune':<8} {seconds:6.1f} s: {removed.trees:,} trees, "
                        f"{removed.runs:,} runs ({removed.trees / seconds:,.0f} trees/s); "
                        f"kept {removed.kept_active:,} with a run still active"
                    )
                print(f"left: {orch.store.runs.count_documents({}):,} runs")
        finally:
            mongo.stop()


if __name__ == "__main__":
    main()
