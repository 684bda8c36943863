"""How fast the UI's runs list answers with 100,000 runs stored (the budget: 100 ms).

Starts a private nx-27017 (data on disk in a temporary directory, or in memory with
`--memory`), inserts `--runs` run documents straight into it (`new_run_document`, in
batches, spread over 30 days, 20 workflows, every status and trigger, a fifth of them child
runs), serves the UI from a thread, and times `GET /` and `GET /api/runs` (median of
`--repeat`) without a filter, with a workflow filter, with a status filter, with both, and on
the next page (its cursor), and with text to find in run ids (`q`: an id's start, the
inside of one, text in none; no index serves it, so every run's id is read); `GET
/api/counts` (which the page loads after it, from its script) is timed too. The figures are
printed as a table.

    .venv/bin/python bench/ui_runs_list.py [--runs 100000] [--repeat 20] [--memory]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from orchestrator.api import Orchestrator
from orchestrator.constants import RUN_STATUSES
from orchestrator.services.embedded import start_mongo
from orchestrator.settings import Settings
from orchestrator.store.models import epoch_ms, new_run_document, new_run_id, utcnow
from orchestrator.ui.server import ServerThread

BUDGET_MS = 100.0
WORKFLOWS = [f"Workflow {n:02d}" for n in range(20)]
TRIGGERS = ["api", "cli", "schedule", "run_workflow"]
BATCH = 1000


def run_documents(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` finished-looking run documents, newest last, with small outputs."""
    rng = random.Random(seed)
    now = utcnow()
    parents: list[str] = []
    for index in range(count):
        run_id = new_run_id()
        created = now - timedelta(seconds=(count - index) * 26)  # ~30 days for 100,000 runs
        child = bool(parents) and rng.random() < 0.2
        parent = rng.choice(parents) if child else None
        doc = new_run_document(
            run_id=run_id,
            workflow=rng.choice(WORKFLOWS),
            node_ids=["fetch", "check", "report", "notify", "done"],
            variables={"symbol": rng.choice(["BTCUSD", "ETHUSD", "SOLUSD"]), "limit": 500},
            trigger={"type": "run_workflow" if child else rng.choice(TRIGGERS[:3])},
            parent_run_id=parent,
            parent_node_id="notify" if child else None,
            root_run_id=parent,  # the parents are top-level runs
        )
        status = rng.choices(RUN_STATUSES, weights=[1, 2, 80, 10, 3, 4])[0]
        doc |= {"status": status, "created_at": created, "created_ms": epoch_ms(created)}
        doc["started_at"] = created + timedelta(seconds=1)
        if status not in ("pending", "running"):
            doc["finished_at"] = created + timedelta(seconds=rng.uniform(2, 90))
        for node in doc["nodes"].values():
            node |= {"status": "finished", "attempts": 1, "output": {"rows": rng.randint(0, 500)}}
        if not child and rng.random() < 0.05:
            parents = [*parents[-50:], run_id]
        yield doc


def insert_runs(orch: Orchestrator, count: int) -> float:
    """Insert `count` runs in batches; the seconds it took."""
    start = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for doc in run_documents(count):
        batch.append(doc)
        if len(batch) == BATCH:
            orch.store.runs.insert_many(batch, ordered=False)
            batch = []
    if batch:
        orch.store.runs.insert_many(batch, ordered=False)
    return time.perf_counter() - start


def median_ms(client: httpx.Client, path: str, repeat: int) -> float:
    """The median milliseconds `GET path` takes (after one warm-up request)."""
    client.get(path).raise_for_status()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def cases(client: httpx.Client) -> list[tuple[str, str]]:
    """(label, query) of every case timed; the next page's cursor is read from the API."""
    first = client.get("/api/runs").json()
    workflow = httpx.QueryParams({"workflow": WORKFLOWS[3]})
    run_id = first["runs"][-1]["_id"]
    return [
        ("no filter", ""),
        ("workflow", f"?{workflow}"),
        ("status=failed", "?status=failed"),
        ("workflow + status", f"?{workflow}&status=finished"),
        ("next page (cursor)", f"?cursor={first['next_cursor']}"),
        ("q: an id's start", f"?q={run_id[:8]}"),
        ("q: inside an id", f"?q={run_id[10:18]}"),
        ("q: in no id", "?q=zz-no-such-run"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--memory", action="store_true", help="keep nx-27017's data in memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as home:
        mongo = start_mongo(Path(home), database="ui_bench", in_memory=args.memory)
        try:
            settings = Settings(MONGO_URL=mongo.url, ORCH_HOME=home)
            with Orchestrator(settings=settings) as orch:
                took = insert_runs(orch, args.runs)
                print(f"inserted {args.runs:,} runs in {took:.1f} s ({'memory' if args.memory else 'disk'})")
                with (
                    ServerThread(settings, orchestrator=orch) as server,
                    httpx.Client(base_url=server.url, timeout=60) as client,
                ):
                    report(client, args.repeat)
        finally:
            mongo.stop()


def report(client: httpx.Client, repeat: int) -> None:
    """Time every case on the page and the API, and the counts; print a table."""
    print(f"\nmedian of {repeat} requests, ms (budget for the page: {BUDGET_MS:g} ms)")
    print(f"{'case':<22}{'GET /':>10}{'GET /api/runs':>16}")
    for label, query in cases(client):
        page, api = median_ms(client, "/" + query, repeat), median_ms(client, "/api/runs" + query, repeat)
        flag = "" if page <= BUDGET_MS else "  over budget"
        print(f"{label:<22}{page:>10.1f}{api:>16.1f}{flag}")
    counts = median_ms(client, "/api/counts", max(repeat // 4, 3))
    counts_wf = median_ms(client, f"/api/counts?{httpx.QueryParams({'workflow': WORKFLOWS[3]})}", 5)
    counts_q = median_ms(client, "/api/counts" + dict(cases(client))["q: inside an id"], 3)
    print(
        f"\nGET /api/counts (loaded by the page's script): {counts:.1f} ms; one workflow: {counts_wf:.1f} ms;"
        f" text inside an id: {counts_q:.1f} ms"
    )


if __name__ == "__main__":
    main()
