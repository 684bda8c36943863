"""Engine overhead benchmark: a straight-line workflow against a raw Celery chain, per step.

What it measures, in one run, against the same Redis and the same single worker
(`celery -A bench.bench_app worker`, prefork, concurrency 1):

* raw Celery: a chain of N immutable `bench.noop` signatures (a task that does nothing),
  timed from `apply_async()` until the last task's result is stored (`AsyncResult.ready()`,
  polled every 2 ms);
* the engine: a workflow of N `set` nodes in a line (node i after node i-1), registered with
  `Orchestrator.register(dict)`, timed from `Orchestrator.trigger` until `Orchestrator.wait`
  sees the run document `finished`. `set` is pure: each node after the first is handed the
  run document by the node before and records its end in one update;
* for comparison (not the target): the same line of `sleep` nodes of 0 s, which are not pure:
  each is handed the document too, but marks itself `running` before it ends (two updates).

Each is run once to warm up, then `--repeat` times (interleaved). The table gives the median
per-step time of the chain, the median per-node time of the workflow and their ratio; the
issue's target is a ratio of at most 2. A few diagnostics follow: how long `trigger` itself
takes, the time to the run document's own `finished_at` (without `wait`'s polling delay),
and, from the node timestamps, the time spent inside nodes and between them.

Services: `REDIS_URL` / `MONGO_URL` when set and answering, else a private `redis-server` and
an in-memory `nx-27017` under a temporary directory, stopped at the end.

Run it from the repository root:

    make bench
    .venv/bin/python bench/engine.py [--repeat 5] [--nodes 100]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery import chain

from orchestrator.api import Orchestrator
from orchestrator.engine.app import OrchestratorApp
from orchestrator.engine.factory import create_app
from orchestrator.services.embedded import Service, private_stack, stop_process
from orchestrator.settings import Settings
from orchestrator.store.models import Run

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `bench` is not an installed package
    sys.path.insert(0, str(REPO))

from bench.store_floor import node_end_over_growth_s, ratio_floor  # noqa: E402

QUEUE_ENV = "BENCH_QUEUE"  # read by bench/bench_app.py
NOOP_TASK = "bench.noop"
POLL_S = 0.002  # how often the chain's last result is looked for


# -- services -------------------------------------------------------------------------------


@dataclass
class Services:
    """The Redis and MongoDB in use, how they were found, and those started here."""

    redis_url: str
    mongo_url: str
    redis_origin: str
    mongo_origin: str
    started: list[Service] = field(default_factory=list)


@contextlib.contextmanager
def services(home: Path) -> Iterator[Services]:
    """The servers at `REDIS_URL` / `MONGO_URL` when they answer (in an empty Redis database and
    a database of the benchmark's own, both emptied at the end), else private servers."""
    redis_url, mongo_url = os.environ.get("REDIS_URL", ""), os.environ.get("MONGO_URL", "")
    with private_stack(home, redis_url, mongo_url, "orchestrator_bench", in_memory=True) as stack:
        names = {service.name for service in stack.started}
        yield Services(
            stack.redis_url,
            stack.mongo_url,
            "private redis-server started here" if "redis-server" in names else "REDIS_URL's server",
            "private nx-27017 (in memory) started here" if "nx-27017" in names else "MONGO_URL's server",
            stack.started,
        )


def redis_version(url: str) -> str:
    """The Redis server's version."""
    client = redis.Redis.from_url(url)
    with contextlib.closing(client):
        return str(client.info("server").get("redis_version", "?"))


def mongo_version(orch: Orchestrator) -> str:
    """The MongoDB(-wire) server's reported version."""
    try:
        return str(orch.store.db.client.server_info().get("version", "version not reported"))
    except Exception as exc:  # a wire server may not implement buildInfo
        return f"? ({type(exc).__name__})"


def queue_app(found: Services, prefix: str = "bench") -> tuple[str, OrchestratorApp, Orchestrator]:
    """A queue of the benchmark's own, an app on `found` that sends to it (set before anything
    is sent, so that only the benchmark's worker takes its tasks), and an `Orchestrator` on it."""
    queue = f"{prefix}-{uuid.uuid4().hex[:8]}"
    settings = Settings().model_copy(update={"redis_url": found.redis_url, "mongo_url": found.mongo_url})
    app = create_app(settings)
    app.conf.task_default_queue = queue
    return queue, app, Orchestrator(app=app)


# -- the worker -----------------------------------------------------------------------------


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def worker(
    app: OrchestratorApp,
    found: Services,
    queue: str,
    log: Path,
    timeout: float = 60,
    app_module: str = "bench.bench_app",
    concurrency: int = 1,
) -> Iterator[str]:
    """One `celery -A <app_module> worker` (prefork) on `queue`; its name."""
    hostname = f"{queue}@{socket.gethostname()}"
    python_path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(
        os.environ,
        REDIS_URL=found.redis_url,
        MONGO_URL=found.mongo_url,
        PYTHONPATH=os.pathsep.join(python_path),
        **{QUEUE_ENV: queue},
    )
    cmd = [sys.executable, "-m", "celery", "-A", app_module, "worker", "--pool", "prefork",
           "--concurrency", str(concurrency), "--loglevel", "WARNING", "--hostname", hostname,
           "--queues", queue, "--without-gossip", "--without-mingle"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None:
                raise RuntimeError(f"worker exited at start (code {process.returncode}):\n{_tail(log)}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"worker did not answer ping within {timeout:g} s:\n{_tail(log)}")
        yield hostname
    finally:
        stop_process(process, timeout=30)


# -- the two measurements -------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run: wall time to completion as the client saw it, and diagnostics."""

    total_s: float
    stamped_s: float  # from the start to the completion time stored by the server/worker
    trigger_s: float = 0.0  # workflow only: how long `trigger` took to return
    in_node_s: float = 0.0  # workflow only: mean time inside a node (its own timestamps)
    between_s: float = 0.0  # workflow only: mean gap from one node's end to the next's start


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def time_chain(app: OrchestratorApp, steps: int, timeout: float) -> Sample:
    """A chain of `steps` no-op tasks, from `apply_async` until the last result is stored."""
    canvas = chain(*[app.signature(NOOP_TASK, immutable=True) for _ in range(steps)])
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    result = canvas.apply_async()
    deadline = start + timeout
    while not result.ready():  # the app's backend refuses `.get()`: poll the stored result
        if time.perf_counter() >= deadline:
            raise TimeoutError(f"chain of {steps} steps not done after {timeout:g} s")
        time.sleep(POLL_S)
    total = time.perf_counter() - start
    if not result.successful():
        raise RuntimeError(f"chain ended {result.state}")
    done = result.date_done
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    stamped = (_aware(done) - started_at).total_seconds() if done else total
    node: Any = result
    while node is not None:  # leave no results behind on a shared Redis
        node.forget()
        node = node.parent
    return Sample(total, stamped)


def line_workflow(name: str, nodes: int, node_type: str = "set") -> dict[str, Any]:
    """A workflow of `nodes` nodes of `node_type` (`set`, or `sleep` of 0 s), each after the one before."""
    ids = [f"n{i:04d}" for i in range(nodes)]
    return {
        "name": name,
        "description": f"benchmark: {nodes} {node_type} nodes in a line",
        "nodes": [
            {
                "id": node_id,
                "type": node_type,
                "params": {"seconds": 0} if node_type == "sleep" else {"i": i},
                **({"after": [ids[i - 1]]} if i else {}),
            }
            for i, node_id in enumerate(ids)
        ],
    }


def _node_timing(run: Run) -> tuple[float, float]:
    """Mean seconds inside a node, and mean seconds between one node's end and the next's start."""
    states = [run.nodes[k] for k in sorted(run.nodes)]
    inside = [s.duration_s for s in states if s.duration_s is not None]
    gaps = [
        (_aware(b.started_at) - _aware(a.finished_at)).total_seconds()
        for a, b in itertools.pairwise(states)
        if a.finished_at and b.started_at
    ]
    return (statistics.fmean(inside) if inside else 0.0, statistics.fmean(gaps) if gaps else 0.0)


def time_workflow(orch: Orchestrator, name: str, timeout: float) -> Sample:
    """One run of the registered workflow, from `trigger` until the run is `finished`."""
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    run_id = orch.trigger(name)
    triggered = time.perf_counter() - start
    run = orch.wait(run_id, timeout=timeout)
    total = time.perf_counter() - start
    if run.status != "finished":
        raise RuntimeError(f"run {run_id} ended {run.status}: {run.error}")
    stamped = (_aware(run.finished_at) - started_at).total_seconds() if run.finished_at else total
    inside, between = _node_timing(run)
    return Sample(total, stamped, triggered, inside, between)


# -- report ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _median_ms(values: list[float]) -> str:
    return _ms(statistics.median(values))


def store_time_per_node(orch: Orchestrator, name: str) -> float:
    """MongoDB's own median time for one node, over the run document's growth: its end
    alone, since every `set` node after the first is handed the document (one update)."""
    finished = orch.store.runs.find_one({"workflow": name, "status": "finished"})
    if finished is None:
        raise RuntimeError(f"no finished run of {name} to measure the store on")
    return node_end_over_growth_s(orch.store.runs, finished)


def report(raw: list[Sample], flow: list[Sample], impure: list[Sample], steps: int, store_s: float) -> None:
    """Print the table: per-step time of the chain, per-node time of the workflow, ratio."""
    print(f"\n{'':26}{'total ms':>10}{'per step ms':>13}{'min':>9}{'max':>9}   (medians of {len(raw)} runs)")
    for label, samples in (("raw Celery chain (noop)", raw), ("workflow (set nodes)", flow)):
        per = [s.total_s / steps for s in samples]
        total = _median_ms([s.total_s for s in samples])
        print(f"{label:26}{total:>10}{_median_ms(per):>13}{_ms(min(per)):>9}{_ms(max(per)):>9}")
    ratio = statistics.median(s.total_s for s in flow) / statistics.median(s.total_s for s in raw)
    verdict = "OK" if ratio <= 2 else "ABOVE TARGET"
    print(f"{'ratio workflow / raw':26}{'':10}{ratio:>13.2f}   (target <= 2.00: {verdict})")
    if impure:
        per = [s.total_s / steps for s in impure]
        impure_total = statistics.median(s.total_s for s in impure)
        versus = impure_total / statistics.median(s.total_s for s in raw)
        print(f"{'sleep 0 s nodes (not pure)':26}{_ms(impure_total):>10}{_median_ms(per):>13}"
              f"{_ms(min(per)):>9}{_ms(max(per)):>9}   (for comparison: ratio {versus:.2f})")  # fmt: skip

    stamped_raw = statistics.median(s.stamped_s for s in raw)
    stamped_flow = statistics.median(s.stamped_s for s in flow)
    print("\ndiagnostics (medians):")
    print(f"  per step, start to the stored completion time: raw {_ms(stamped_raw / steps)} ms, "
          f"workflow {_ms(stamped_flow / steps)} ms, ratio {stamped_flow / stamped_raw:.2f}")  # fmt: skip
    print(f"  workflow trigger() call:               {_median_ms([s.trigger_s for s in flow])} ms")
    print(
        f"  wait() return after finished_at:       {_median_ms([s.total_s - s.stamped_s for s in flow])} ms"
    )
    print(f"  inside a node (its own timestamps):    {_median_ms([s.in_node_s for s in flow])} ms")
    print(f"  from a node's end to the next's start: {_median_ms([s.between_s for s in flow])} ms")
    raw_step = statistics.median(s.total_s for s in raw) / steps
    print(f"  MongoDB's own time per node (one update, one at a time): {_ms(store_s)} ms; with it alone "
          f"the ratio cannot go below {ratio_floor(store_s, raw_step):.2f} on this store")  # fmt: skip


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs of each, after one warm-up (default 5)"
    )
    parser.add_argument("--nodes", type=int, default=100, help="chain steps / workflow nodes (default 100)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per run (default 600)")
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the comparison line of `sleep` nodes of 0 s (not pure: two MongoDB updates each)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.nodes < 1:
        parser.error("--repeat and --nodes must be at least 1")
    return args


def run_benchmark(args: argparse.Namespace, home: Path) -> None:
    """Start what is needed, measure both, print the table, clean up."""
    with services(home) as found:
        queue, app, orch = queue_app(found)
        name = f"bench_line_{args.nodes}_{queue[6:]}"
        impure_name = f"bench_sleep_line_{args.nodes}_{queue[6:]}"
        try:
            redis_server = f"redis-server {redis_version(found.redis_url)}"
            print(f"Redis:   {found.redis_url}  ({redis_server}; {found.redis_origin})")
            print(f"MongoDB: {found.mongo_url}  ({mongo_version(orch)}; {found.mongo_origin})")
            orch.register(line_workflow(name, args.nodes))
            orch.register(line_workflow(impure_name, args.nodes, "sleep"))
            with worker(app, found, queue, home / "worker.log") as hostname:
                print(f"worker:  {hostname} (prefork, concurrency 1), queue {queue}")
                print(
                    f"{args.nodes} steps / nodes; 1 warm-up + {args.repeat} timed runs of each, interleaved"
                )
                time_chain(app, args.nodes, args.timeout)
                time_workflow(orch, name, args.timeout)
                raw: list[Sample] = []
                flow: list[Sample] = []
                impure: list[Sample] = []
                for _ in range(args.repeat):
                    raw.append(time_chain(app, args.nodes, args.timeout))
                    flow.append(time_workflow(orch, name, args.timeout))
                    if args.compare:
                        impure.append(time_workflow(orch, impure_name, args.timeout))
            report(raw, flow, impure, args.nodes, store_time_per_node(orch, name))
        finally:
            for workflow_name in (name, impure_name):
                orch.store.runs.delete_many({"workflow": workflow_name})
                orch.store.delete_workflow(workflow_name)
            orch.close()
            app.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 when it ran (whatever the ratio)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        run_benchmark(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
