"""Scale benchmark (issue 17, "Flat cost at any width"): the engine's cost per unit against N.

For each N (10, 100 and 1,000 unless `--n` says otherwise; 10,000 with `--huge`) and each
shape, one run, counted exactly:

1. `line`: N `set` nodes in a line (node i after node i-1); per node;
2. `fanout`: one `set` node, then N `set` nodes after it; per fanned-out node;
3. `ff`: a parent of N `run_workflow` nodes in `fire_and_forget` mode, each starting a
   one-node `set` workflow; per child, until the parent and every child are over;
4. `wait`: the same parent with the nodes in `wait` mode; per child;
5. `loop`: one `parameter_loop` node over N values whose body is a `set` node (each iteration
   is a child run of a one-node workflow, `workers/parameter_loop.py`; its output lists every
   iteration up to 2,000 values, and is a summary past that); per iteration.

Beside them, in the same run and on the same worker: a raw Celery chain of N `bench.noop`
tasks (beside `line`) and a raw Celery group of N (beside the others), timed from
`apply_async` until the last result is stored.

Also, in the default run (or with `--fanout500`): `ff` at N=500 beside a raw group of 500.

Per unit it prints MongoDB commands, MongoDB bytes (request plus reply, BSON), task
messages published and their body bytes (kombu's JSON; the headers' bytes are in the JSON
output), and the wall time. The counts come
from the processes themselves (`bench/counters.py`): a pymongo command listener and Celery's
`before_task_publish` signal in the client and in every worker process (`celery -A
bench.scale_app worker`, prefork), summed in a Redis hash that is emptied before each run
and read once the run is over and the worker is idle (no task active, reserved or scheduled,
the queue empty, the counts unchanged for `STABLE_S`). What the client does to watch a run
is not counted; what it does to start one (`Orchestrator.trigger`) is. Counts are the
figures that matter; wall times are context (two noisy cores, a MongoDB-wire server on
SQLite).

Then: the growth of bytes per unit from the smallest N to the largest per shape (target
<= 1.5x), the fan-out of 500 against a raw group of 500 (target <= 5x) with the store's own
time floor (`bench/store_floor.py`), and where the growth comes from (commands and
messages by name, and the parts of message bodies). A run that passes `--timeout` (120 s)
is cut off: its line says how far it got, the worker is replaced (a fresh queue) and the
benchmark goes on. `--json` prints the figures as JSON on stdout, the tables on stderr.

This module runs the cells; the shapes' workflows and a cell's figures are in
`bench/scale_shapes.py`, the tables in `bench/scale_report.py`.

Services: `REDIS_URL` / `MONGO_URL` when set and answering, else a private `redis-server` and
an in-memory `nx-27017` under a temporary directory, stopped at the end (as `bench/engine.py`).

Run it from the repository root:

    make bench
    .venv/bin/python bench/scale.py [--shapes line,ff] [--n 10,100] [--huge] [--fanout500] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `bench` is not an installed package
    sys.path.insert(0, str(REPO))

from bench import counters  # noqa: E402  (before any MongoDB client: see counters.install)

TALLY = counters.install()

import redis  # noqa: E402
from celery import chain, group  # noqa: E402

from bench.engine import (  # noqa: E402
    NOOP_TASK,
    Services,
    mongo_version,
    queue_app,
    redis_version,
    services,
    worker,
)
from bench.run_workflow import store_time_per_child  # noqa: E402
from bench.scale_report import as_json, report  # noqa: E402
from bench.scale_shapes import (  # noqa: E402
    CHILD_SHAPES,
    DEFAULT_NS,
    FANOUT_N,
    HUGE_N,
    LOOP_NODE,
    RAW_BESIDE,
    SHAPES,
    Cell,
    child_ids,
    child_workflow,
    shape_workflow,
)
from orchestrator.api import Orchestrator  # noqa: E402
from orchestrator.constants import NODE_OVER, RUN_OVER  # noqa: E402
from orchestrator.engine.app import OrchestratorApp  # noqa: E402
from orchestrator.errors import WaitTimeout  # noqa: E402

POLL_S = 0.02  # how often the client looks at a run, a child or a raw result
STABLE_S = 0.6  # counts unchanged this long (with the worker idle): the run's work is over
SETTLE_TIMEOUT_S = 120.0
CHUNK = 1000  # ids per `$in` query when counting what is done
NOTE_CHARS = 240


def say(text: str) -> None:
    """A progress line, on stderr."""
    print(text, file=sys.stderr, flush=True)


# -- one worker and its client ----------------------------------------------------------------


@dataclass
class Lane:
    """A worker on a queue of its own, the client's app and orchestrator that send to it."""

    queue: str
    app: OrchestratorApp
    orch: Orchestrator
    hostname: str
    stack: contextlib.ExitStack

    def close(self) -> None:
        """Stop the worker; close the client's connections."""
        self.stack.close()
        self.orch.close()


class Bench:
    """The services, the worker (replaced after a cut-off) and the counts' hash."""

    def __init__(self, found: Services, home: Path, concurrency: int, key: str) -> None:
        self.found, self.home, self.concurrency, self.key = found, home, concurrency, key
        self.counts = redis.Redis.from_url(found.redis_url)
        self.child = f"scale_child_{self.key[-8:]}"
        self.lanes = 0
        self.lane = self._start_lane()
        self.lane.orch.register(child_workflow(self.child))

    def _start_lane(self) -> Lane:
        self.lanes += 1
        queue, app, orch = queue_app(self.found, prefix="scale")
        stack = contextlib.ExitStack()
        log = self.home / f"worker-{self.lanes}.log"
        hostname = stack.enter_context(
            worker(app, self.found, queue, log, app_module="bench.scale_app", concurrency=self.concurrency)
        )
        return Lane(queue, app, orch, hostname, stack)

    def replace_lane(self) -> None:
        """A fresh worker on a fresh queue: what a cut-off run left behind runs no further."""
        self.lane.close()
        self.lane = self._start_lane()

    def close(self) -> None:
        """Stop the worker, drop the hash; the client pushes no more counts."""
        TALLY.stop()
        with contextlib.suppress(redis.RedisError):
            self.counts.delete(self.key)
        self.lane.close()
        self.counts.close()

    # -- counting ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Start counting from zero: the client's own counts pushed (so that none lands
        later), then the hash emptied."""
        TALLY.flush()
        counters.reset(self.counts, self.key)

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> tuple[dict[str, int], bool]:
        """The counts once the worker is idle and they stopped changing; and whether they did
        settle within `timeout` (else the counts as they are)."""
        TALLY.flush()
        deadline = time.monotonic() + timeout
        last: dict[str, int] | None = None
        since = time.monotonic()
        while True:
            counts = counters.read(self.counts, self.key)
            now = time.monotonic()
            if counts != last:
                last, since = counts, now
            elif now - since >= STABLE_S and self._idle():
                return counts, True
            if now >= deadline:
                return counts, False
            time.sleep(0.1)

    def _idle(self) -> bool:
        """No task on the queue, nor active, reserved or scheduled (a countdown) in the worker."""
        if self.counts.llen(self.lane.queue):
            return False
        inspect = self.lane.app.control.inspect(destination=[self.lane.hostname], timeout=1.0)
        for ask in (inspect.active, inspect.reserved, inspect.scheduled):
            replies = ask()
            if not replies or any(replies.values()):
                return False
        return True


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a watched run ended."""

    status: str
    done: int
    notes: list[str] = field(default_factory=list)


def measured(
    bench: Bench, cell: Callable[[], tuple[float, Outcome]], what: tuple[str, str, int], timeout: float
) -> Cell:
    """Count one run: empty the hash, start and watch it (`cell`), let its work settle, read.
    A run cut off is read as it stands, and its worker replaced."""
    bench.begin()
    wall, outcome = cell()
    if outcome.status == "cut off":
        counts, settled = counters.read(bench.counts, bench.key), False
    else:
        counts, settled = bench.settle()
    notes = [note if len(note) <= NOTE_CHARS else note[:NOTE_CHARS] + "…" for note in outcome.notes]
    result = Cell(*what, wall, outcome.done, outcome.status, counts, settled, notes, timeout_s=timeout)
    if not settled and not result.cut_off:
        result.notes.append(f"the counts had not settled {SETTLE_TIMEOUT_S:g} s after the end")
    if result.cut_off:
        bench.replace_lane()
    return result


def engine_cell(bench: Bench, shape: str, n: int, timeout: float) -> Cell:
    """One run of `shape` at width `n`, counted; its documents removed after."""
    lane = bench.lane
    name = f"scale_{shape}_{n}_{bench.key[-8:]}"
    lane.orch.register(shape_workflow(shape, name, n, bench.child))
    run_ids: list[str] = []

    def run() -> tuple[float, Outcome]:
        start = time.perf_counter()
        run_ids.append(lane.orch.trigger(name))
        deadline = time.monotonic() + timeout
        with TALLY.uncounted():
            outcome = watch(lane.orch, shape, run_ids[0], n, deadline)
        return time.perf_counter() - start, outcome

    cell = measured(bench, run, ("engine", shape, n), timeout)
    with TALLY.uncounted():
        if shape == "ff" and n == FANOUT_N and not cell.cut_off:
            cell.store_s_per_child = store_time_per_child(bench.lane.orch, run_ids[0], bench.child)
        runs = bench.lane.orch.store.runs
        runs.delete_many({"workflow": {"$in": [name, bench.child, f"{name}/{LOOP_NODE}"]}})
        bench.lane.orch.store.delete_workflow(name)
    return cell


def watch(orch: Orchestrator, shape: str, run_id: str, n: int, deadline: float) -> Outcome:
    """Wait until the run (and, for the shapes with children, every child) is over."""
    try:
        parent = orch.wait(run_id, timeout=max(deadline - time.monotonic(), 0.01))
    except WaitTimeout:
        return Outcome("cut off", units_done(orch, shape, run_id, n))
    notes = [f"run {parent.status}: {parent.error}"] if parent.status != "finished" else []
    if shape not in CHILD_SHAPES:
        return Outcome(parent.status, units_done(orch, shape, run_id, n), notes)
    missing, failed = 0, 0
    for child_id in child_ids(shape, run_id, n):
        status = child_over(orch, child_id, deadline)
        if status == "cut off":
            return Outcome("cut off", units_done(orch, shape, run_id, n), notes)
        missing += status is None
        failed += status not in (None, "finished")
    notes += [f"{missing} children never started"] if missing else []
    notes += [f"{failed} children did not finish"] if failed else []
    return Outcome(parent.status, n - missing, notes)


def child_over(orch: Orchestrator, run_id: str, deadline: float) -> str | None:
    """A child's final status once it is over; None when it does not exist (its parent is
    over, so it never will); "cut off" at the deadline."""
    while True:
        doc = orch.store.runs.find_one({"_id": run_id}, {"status": 1})
        if doc is None:
            return None
        if doc["status"] in RUN_OVER:
            return str(doc["status"])
        if time.monotonic() >= deadline:
            return "cut off"
        time.sleep(POLL_S)


def units_done(orch: Orchestrator, shape: str, run_id: str, n: int) -> int:
    """How many of the run's N units are over: nodes of its document, or children."""
    runs = orch.store.runs
    if shape in CHILD_SHAPES:
        ids = child_ids(shape, run_id, n)
        return sum(
            runs.count_documents({"_id": {"$in": ids[i : i + CHUNK]}, "status": {"$in": list(RUN_OVER)}})
            for i in range(0, n, CHUNK)
        )
    doc = runs.find_one({"_id": run_id}, {"nodes": 1}) or {}
    return sum(
        1 for key, state in doc.get("nodes", {}).items() if key != "root" and state["status"] in NODE_OVER
    )


def raw_cell(bench: Bench, shape: str, n: int, timeout: float) -> Cell:
    """A raw Celery chain or group of `n` no-op tasks, counted."""
    app = bench.lane.app
    signatures = [app.signature(NOOP_TASK, immutable=True) for _ in range(n)]
    results: list[Any] = []

    def run() -> tuple[float, Outcome]:
        start = time.perf_counter()
        if shape == "chain":
            last = chain(*signatures).apply_async()
            results.extend(reversed(list(ancestors(last))))
        else:
            results.extend(group(signatures).apply_async().results)
        deadline = time.monotonic() + timeout
        done = 0
        while done < n:  # in order: a chain's tasks end in order, a group's mostly
            if results[done].ready():
                done += 1
            elif time.monotonic() >= deadline:
                return time.perf_counter() - start, Outcome("cut off", done)
            else:
                time.sleep(POLL_S)
        return time.perf_counter() - start, Outcome("finished", n)

    cell = measured(bench, run, ("raw", shape, n), timeout)
    forget(app, [result.id for result in results])
    return cell


def forget(app: OrchestratorApp, task_ids: list[str]) -> None:
    """Remove the raw tasks' results (`AsyncResult.forget` recurses through a chain's parents)."""
    keys = [app.backend.get_key_for_task(task_id) for task_id in task_ids]
    with contextlib.suppress(redis.RedisError):
        for i in range(0, len(keys), CHUNK):
            app.backend.client.delete(*keys[i : i + CHUNK])


def ancestors(result: Any) -> Iterator[Any]:
    """A chain's results, last first."""
    while result is not None:
        yield result
        result = result.parent


# -- main -------------------------------------------------------------------------------------


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--shapes", type=_csv(str), default=list(SHAPES), help=f"of {','.join(SHAPES)} (default all)"
    )
    parser.add_argument("--n", type=_csv(int), help="widths, e.g. 10,100 (default 10,100,1000)")
    parser.add_argument("--huge", action="store_true", help=f"add N={HUGE_N:,}")
    parser.add_argument(
        "--fanout500",
        action="store_true",
        help=f"add the ff shape at N={FANOUT_N} against a raw group (default: on without --n)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds before a run is cut off (default 120)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="prefork worker processes (default 2)")
    parser.add_argument(
        "--json", action="store_true", help="print the figures as JSON on stdout (tables on stderr)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.shapes) - set(SHAPES)
    if unknown or not args.shapes:
        parser.error(f"--shapes: choose among {', '.join(SHAPES)}")
    args.fanout500 = args.fanout500 or (args.n is None and "ff" in args.shapes)
    args.n = sorted(set(args.n or DEFAULT_NS) | ({HUGE_N} if args.huge else set()))
    if min(args.n) < 1 or args.concurrency < 1:
        parser.error("--n and --concurrency must be at least 1")
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Every cell to measure, in order: by N, raw baselines first."""
    cells: list[tuple[str, str, int]] = []
    for n in args.n:
        raws = sorted({RAW_BESIDE[s] for s in args.shapes})
        cells += [("raw", r, n) for r in raws] + [("engine", s, n) for s in args.shapes]
    if args.fanout500 and FANOUT_N not in args.n:
        cells += [("raw", "group", FANOUT_N), ("engine", "ff", FANOUT_N)]
    return cells


def warm_up(bench: Bench, shapes: list[str]) -> None:
    """Small runs, not reported, so that the first cell measured does not pay for the pool
    processes' first connections: the raw baselines and a fan-out of child runs (the node
    types were imported when the worker started)."""
    for shape in sorted({RAW_BESIDE[s] for s in shapes}):
        raw_cell(bench, shape, 4, 60)
    engine_cell(bench, "ff", 4, 60)


def measure_all(bench: Bench, args: argparse.Namespace) -> tuple[list[Cell], list[Cell]]:
    """Every cell of the plan; each said on stderr as it ends."""
    engine: list[Cell] = []
    raw: list[Cell] = []
    for kind, shape, n in plan(args):
        say(f"{kind} {shape} N={n}…")
        if kind == "raw":
            cell = raw_cell(bench, shape, n, args.timeout)
            raw.append(cell)
        else:
            cell = engine_cell(bench, shape, n, args.timeout)
            engine.append(cell)
        line = cell.cut_off_line() if cell.cut_off else f"{cell.wall_s:.2f} s, {cell.status}"
        say(f"  {line}; {cell.total('mongo_commands'):,} commands, {cell.total('messages'):,} messages")
    return engine, raw


def run_benchmark(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """Start what is needed, measure, return the figures."""
    with services(home) as found:
        key = f"bench:scale:{uuid.uuid4().hex[:8]}"
        os.environ[counters.URL_ENV], os.environ[counters.KEY_ENV] = found.redis_url, key  # for the worker
        counters.install(found.redis_url, key)
        bench = Bench(found, home, args.concurrency, key)
        try:
            header = {
                "redis": f"{found.redis_url} (redis-server {redis_version(found.redis_url)}; "
                f"{found.redis_origin})",
                "mongo": f"{found.mongo_url} ({mongo_version(bench.lane.orch)}; {found.mongo_origin})",
                "worker": f"prefork, concurrency {args.concurrency}",
                "timeout_s": args.timeout,
            }
            for key, value in header.items():
                say(f"{key}: {value}")
            say("warming up…")
            warm_up(bench, args.shapes)
            engine, raw = measure_all(bench, args)
        finally:
            bench.close()
    return {"setup": header, "widths": args.n, "engine": engine, "raw": raw}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 when it ran (whatever the figures)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="orch-bench-scale-") as tmp:
        figures = run_benchmark(args, Path(tmp))
    report(figures, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(as_json(figures), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
