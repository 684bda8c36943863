"""`run_workflow` benchmark: trigger, wait and fan-out overhead of child runs, beside raw Celery.

What it measures, in one run, against the same Redis, MongoDB and worker (`celery -A
bench.run_workflow worker`: the orchestrator's app with `bench.noop` and `bench.stamp`,
prefork, concurrency 2):

1. **Trigger overhead**, `--triggers` times each, interleaved, sequential (one at a time):
   * raw Celery: `apply_async` of `bench.stamp`, a task whose body returns `time.time()`
     (stored in Redis as its result), minus the client's `time.time()` just before the call;
   * `Orchestrator.trigger` of a one-node workflow (a `set` node) until that node starts: the
     node's `started_at` in the run document minus the client's `time.time()` just before
     `trigger`. A finished node's `started_at` is taken in the worker after the round trip
     that marks it running (`run_node`), so it is a time inside the node; it is truncated
     to the millisecond (MongoDB's precision), which biases this figure down by 0.5 ms on
     average;
   * a `run_workflow` node in `fire_and_forget` mode starting the same one-node workflow:
     the child's node `started_at` minus the parent node's `finished_at` (taken once the
     child's document is inserted, just before the node's end is recorded and the child's
     canvas sent), and minus the child run's `created_at` (taken just before its document
     is inserted, as `trigger` does).
   Targets: p50 <= 10 ms, p99 <= 50 ms.
2. **Wait overhead**, `--waits` times: a parent whose only node is a `run_workflow` node in
   `wait` mode (default `poll_interval_s` 1.5) on a child whose only node sleeps 2 s. Overhead
   = the parent node's wait (its `finished_at - started_at`; `started_at` is when the wait
   began, just after the child was started) minus the child's duration (child run
   `finished_at - created_at`). Also shown: the same with the child's duration taken from its
   `started_at` (first node start), the wake-up latency (parent node `finished_at` - child
   `finished_at`) and the node's own `elapsed_s`. Target: median <= 0.2 s.
3. **Fan-out**: `--fanout` fire-and-forget children of the one-node workflow, started by
   `--fanout / --width` parent runs each made of `--width` parallel `run_workflow` nodes
   (default: one parent of `--fanout` nodes), timed from the first `trigger` until the last
   child run's `finished_at`; beside a raw Celery `group` of `--fanout` `bench.noop` tasks
   timed from `apply_async` until the last result's `date_done`. Also shown: both as the
   client saw them (polling every 20 ms). Target: ratio engine / raw <= 3.

Services: `REDIS_URL` / `MONGO_URL` when set and answering, else a private `redis-server` and
an in-memory `nx-27017` under a temporary directory, stopped at the end (as `bench/engine.py`).

Run it from the repository root:

    make bench
    .venv/bin/python bench/run_workflow.py [--triggers 200] [--waits 10] [--fanout 500] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `bench` is not an installed package
    sys.path.insert(0, str(REPO))

from celery import group  # noqa: E402

from bench.engine import (  # noqa: E402
    NOOP_TASK,
    _aware,
    mongo_version,
    queue_app,
    redis_version,
    services,
    worker,
)
from bench.store_floor import (  # noqa: E402
    insert_s,
    median_s,
    node_end_over_growth_s,
    node_start_and_end_s,
    ratio_floor,
)
from orchestrator.api import Orchestrator  # noqa: E402
from orchestrator.constants import RUN_OVER  # noqa: E402
from orchestrator.engine.app import OrchestratorApp  # noqa: E402
from orchestrator.engine.child_runs import child_run_id  # noqa: E402
from orchestrator.store.models import Run  # noqa: E402

STAMP_TASK = "bench.stamp"
POLL_S = 0.002  # how often a raw task's result is looked for
FANOUT_POLL_S = 0.02  # how often the fan-out's progress is looked for
CHILD_SLEEP_S = 2.0
QUICK = {"triggers": 20, "waits": 3, "fanout": 50}
FULL = {"triggers": 200, "waits": 10, "fanout": 500}


# -- the worker's app: `celery -A bench.run_workflow worker` ----------------------------------

_worker_app: OrchestratorApp | None = None


def __getattr__(name: str) -> Any:
    """`app`, for the worker only: bench/bench_app.py's app plus `bench.stamp`, made on first use."""
    global _worker_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _worker_app is None:
        from bench.bench_app import app

        @app.task(name=STAMP_TASK, shared=False)  # type: ignore[untyped-decorator]
        def stamp() -> float:
            """The time the task's body runs: the raw-Celery start time."""
            return time.time()

        _worker_app = app
    return _worker_app


# -- workflows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """The benchmark's workflows, named after its queue so that runs never mix."""

    one: str  # one `set` node `n`: the child whose start is timed
    ff: str  # one `run_workflow` fire_and_forget node `go` -> one
    sleeper: str  # one `sleep` node `s` (2 s)
    waiter: str  # one `run_workflow` wait node `w` -> sleeper
    fan: str  # `width` parallel `run_workflow` fire_and_forget nodes -> one
    warm_fan: str  # the same, 4 wide, for the warm-up

    @classmethod
    def for_tag(cls, tag: str) -> Names:
        return cls(*(f"bench_rw_{kind}_{tag}" for kind in ("one", "ff", "sleep", "wait", "fan", "warmfan")))

    def all(self) -> list[str]:
        return [self.one, self.ff, self.sleeper, self.waiter, self.fan, self.warm_fan]


def _run_workflow_node(node_id: str, target: str, mode: str) -> dict[str, Any]:
    return {"id": node_id, "type": "run_workflow", "params": {"workflow": target, "mode": mode}}


def _fan(name: str, target: str, width: int) -> dict[str, Any]:
    nodes = [_run_workflow_node(f"c{i:04d}", target, "fire_and_forget") for i in range(width)]
    return {"name": name, "description": f"benchmark: {width} fire-and-forget children", "nodes": nodes}


def register_workflows(orch: Orchestrator, names: Names, width: int) -> None:
    """Register every workflow the benchmark runs."""
    orch.register({"name": names.one, "nodes": [{"id": "n", "type": "set", "params": {"i": 0}}]})
    orch.register({"name": names.ff, "nodes": [_run_workflow_node("go", names.one, "fire_and_forget")]})
    orch.register(
        {"name": names.sleeper, "nodes": [{"id": "s", "type": "sleep", "params": {"seconds": CHILD_SLEEP_S}}]}
    )
    orch.register({"name": names.waiter, "nodes": [_run_workflow_node("w", names.sleeper, "wait")]})
    orch.register(_fan(names.fan, names.one, width))
    orch.register(_fan(names.warm_fan, names.one, 4))


# -- helpers ----------------------------------------------------------------------------------


def timestamp(value: datetime | None) -> float:
    if value is None:
        raise RuntimeError("a timestamp the benchmark needs is missing from the run document")
    return _aware(value).timestamp()


def finished_run(orch: Orchestrator, run_id: str, timeout: float) -> Run:
    run = orch.wait(run_id, timeout=timeout)
    if run.status != "finished":
        raise RuntimeError(f"run {run_id} ({run.workflow}) ended {run.status}: {run.error}")
    return run


def _poll_result(result: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not result.ready():  # the app's backend refuses `.get()`: poll the stored result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"task {result.id} not done after {timeout:g} s")
        time.sleep(POLL_S)
    if not result.successful():
        raise RuntimeError(f"task {result.id} ended {result.state}")


def _date_done(result: Any) -> float:
    done = result.date_done
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    return timestamp(done)


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


# -- 1. trigger overhead ----------------------------------------------------------------------


@dataclass
class TriggerSamples:
    raw: list[float]  # apply_async -> task body
    api: list[float]  # trigger() -> child node started_at
    api_call: list[float]  # how long trigger() took to return
    api_created: list[float]  # run created_at -> node started_at (API runs)
    ff_node: list[float]  # parent node finished_at -> child node started_at
    ff_created: list[float]  # child created_at -> child node started_at


def raw_start(app: OrchestratorApp, timeout: float) -> float:
    """Seconds from `apply_async` of `bench.stamp` until its body ran (its own clock)."""
    signature = app.signature(STAMP_TASK)
    before = time.time()
    result = signature.apply_async()
    _poll_result(result, timeout)
    started = float(result.result)
    result.forget()
    return started - before


def api_start(orch: Orchestrator, name: str, timeout: float) -> tuple[float, float, float]:
    """trigger() -> node start, how long trigger() took, and created_at -> node start."""
    before = time.time()
    run_id = orch.trigger(name)
    returned = time.time()
    run = finished_run(orch, run_id, timeout)
    node_start = timestamp(run.nodes["n"].started_at)
    return node_start - before, returned - before, node_start - timestamp(run.created_at)


def ff_start(orch: Orchestrator, name: str, timeout: float) -> tuple[float, float]:
    """Parent node finished_at -> child node start, and child created_at -> child node start."""
    parent = finished_run(orch, orch.trigger(name), timeout)
    node = parent.nodes["go"]
    output: Any = node.output
    child = finished_run(orch, str(output["run_id"]), timeout)
    child_start = timestamp(child.nodes["n"].started_at)
    return child_start - timestamp(node.finished_at), child_start - timestamp(child.created_at)


def measure_triggers(
    orch: Orchestrator, names: Names, count: int, timeout: float, progress: Callable[[str], None]
) -> TriggerSamples:
    """`count` of each, interleaved, one at a time."""
    samples = TriggerSamples([], [], [], [], [], [])
    for i in range(count):
        samples.raw.append(raw_start(orch.app, timeout))
        total, call, created = api_start(orch, names.one, timeout)
        samples.api.append(total)
        samples.api_call.append(call)
        samples.api_created.append(created)
        from_node, from_created = ff_start(orch, names.ff, timeout)
        samples.ff_node.append(from_node)
        samples.ff_created.append(from_created)
        if (i + 1) % 50 == 0:
            progress(f"  {i + 1}/{count} triggers")
    return samples


# -- 2. wait overhead -------------------------------------------------------------------------


@dataclass
class WaitSample:
    node_wait: float  # parent node finished_at - started_at
    elapsed: float  # the node output's elapsed_s
    child_from_created: float  # child finished_at - created_at
    child_from_started: float  # child finished_at - started_at
    wake: float  # parent node finished_at - child finished_at


def measure_wait(orch: Orchestrator, names: Names, timeout: float) -> WaitSample:
    """One parent waiting on a 2 s child."""
    parent = finished_run(orch, orch.trigger(names.waiter), timeout)
    node = parent.nodes["w"]
    output: Any = node.output
    if output.get("targetStatus") != "finished":
        raise RuntimeError(f"run {parent.id}: the wait ended {output}")
    child = orch.get_run(str(output["run_id"]))
    child_end = timestamp(child.finished_at)
    return WaitSample(
        node_wait=timestamp(node.finished_at) - timestamp(node.started_at),
        elapsed=float(output["elapsed_s"]),
        child_from_created=child_end - timestamp(child.created_at),
        child_from_started=child_end - timestamp(child.started_at),
        wake=timestamp(node.finished_at) - child_end,
    )


# -- 3. fan-out -------------------------------------------------------------------------------


@dataclass
class FanSample:
    stamped: float  # start -> the last completion time stored by the worker / server
    observed: float  # start -> the client saw everything done
    parent_ids: tuple[str, ...] = ()  # the engine's fan-out parents


def raw_group(app: OrchestratorApp, size: int, timeout: float) -> FanSample:
    """A group of `size` no-op tasks, from `apply_async` until the last result is stored."""
    canvas = group(app.signature(NOOP_TASK, immutable=True) for _ in range(size))
    before, start = time.time(), time.perf_counter()
    result = canvas.apply_async()
    results = list(result.results)
    deadline, done = time.monotonic() + timeout, 0
    while done < len(results):
        if results[done].ready():
            done += 1
            continue
        if time.monotonic() >= deadline:
            raise TimeoutError(f"group of {size}: {done} done after {timeout:g} s")
        time.sleep(FANOUT_POLL_S)
    observed = time.perf_counter() - start
    last = max(_date_done(r) for r in results)
    result.forget()
    return FanSample(last - before, observed)


def _over(orch: Orchestrator, run_id: str, deadline: float) -> dict[str, Any]:
    """The run's status and end, once it is over (it may not exist yet)."""
    while True:
        doc = orch.store.runs.find_one({"_id": run_id}, {"status": 1, "finished_at": 1})
        if doc is not None and doc["status"] in RUN_OVER:
            return doc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"fan-out: child run {run_id} not over in time")
        time.sleep(FANOUT_POLL_S)


def engine_fan(orch: Orchestrator, name: str, parents: int, width: int, timeout: float) -> FanSample:
    """`parents` runs of the fan-out workflow, from the first trigger until every child is over.

    Progress is read child by child by `_id` (the ids are known: `<parent>.<node>`), which
    costs the server a fraction of a millisecond per look; a `count_documents` over the
    children scans the collection on nx-27017 (~40 ms a call) and would slow the run measured.
    """
    before, start = time.time(), time.perf_counter()
    parent_ids = [orch.trigger(name) for _ in range(parents)]
    deadline = time.monotonic() + timeout
    docs = [_over(orch, child_run_id(p, f"c{i:04d}"), deadline) for p in parent_ids for i in range(width)]
    observed = time.perf_counter() - start
    failed = [d["_id"] for d in docs if d["status"] != "finished"]
    if failed:
        raise RuntimeError(f"fan-out: {len(failed)} children did not finish, e.g. {failed[0]}")
    for parent_id in parent_ids:
        finished_run(orch, parent_id, timeout)
    return FanSample(max(timestamp(d["finished_at"]) for d in docs) - before, observed, tuple(parent_ids))


def store_time_per_child(orch: Orchestrator, parent_id: str, target: str) -> float:
    """MongoDB's own time for one fire-and-forget child, its operations timed one at a time.

    The parent node's end on the parent's document (averaged over its growth: every node
    pending, every node finished; a `fire_and_forget` node is pure: it is handed the
    document by the run's launch and recorded once, at its end), the target workflow's
    read, the child's insert, and the child's own two: its `dispatched_at` (an update) and
    its node's end with the run's end (a `find_one_and_update`, timed as a start is; the
    node is handed the document by the child's launch, so it reads nothing).
    """
    runs = orch.store.runs
    parent = orch.store.get_run_document(parent_id)
    parent_s = node_end_over_growth_s(runs, parent)
    child = orch.store.get_run_document(child_run_id(parent_id, next(iter(parent["nodes"]))))
    child_node = next(iter(child["nodes"]))
    child_end_s, child_update_s = node_start_and_end_s(runs, child, child_node)
    workflow_s = median_s(lambda: orch.store.workflows.find_one({"_id": target}))
    return parent_s + workflow_s + insert_s(runs, child) + child_update_s + child_end_s


# -- report -----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _verdict(ok: bool) -> str:
    return "OK" if ok else "ABOVE TARGET"


def report_triggers(s: TriggerSamples) -> None:
    print(f"\n1. trigger overhead: until the first node starts ({len(s.raw)} of each, interleaved)")
    print(f"   {'':62}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows: list[tuple[str, list[float], bool]] = [
        ("raw Celery: apply_async -> task body (bench.stamp)", s.raw, False),
        ("orch.trigger() -> child node started_at", s.api, True),
        ("run_workflow f&f: parent node finished_at -> child node start", s.ff_node, True),
        ("run_workflow f&f: child created_at -> child node start", s.ff_created, True),
    ]
    for label, values, target in rows:
        p50, p99 = percentile(values, 50), percentile(values, 99)
        verdict = f"  (p50 <= 10, p99 <= 50: {_verdict(p50 <= 0.010 and p99 <= 0.050)})" if target else ""
        print(f"   {label:62}{_ms(p50):>9}{_ms(p99):>9}{_ms(max(values)):>9}{verdict}")
    call50, call99 = percentile(s.api_call, 50), percentile(s.api_call, 99)
    created50, created99 = percentile(s.api_created, 50), percentile(s.api_created, 99)
    print(f"   diagnostics: trigger() call p50 {_ms(call50)} ms, p99 {_ms(call99)} ms; "
          f"API run created_at -> node start p50 {_ms(created50)} ms, p99 {_ms(created99)} ms")  # fmt: skip


def report_waits(samples: list[WaitSample]) -> None:
    def med(get: Callable[[WaitSample], float]) -> float:
        return statistics.median(get(s) for s in samples)

    overhead = [s.node_wait - s.child_from_created for s in samples]
    print(f"\n2. wait overhead: run_workflow wait node on a {CHILD_SLEEP_S:g} s child "
          f"(poll_interval_s 1.5; medians of {len(samples)})")  # fmt: skip
    print(f"   parent node wait (finished_at - started_at)         {med(lambda s: s.node_wait):8.3f} s"
          f"   (its elapsed_s: {med(lambda s: s.elapsed):.3f} s)")  # fmt: skip
    child = med(lambda s: s.child_from_created)
    print(f"   child duration (finished_at - created_at)           {child:8.3f} s")
    median = statistics.median(overhead)
    verdict = _verdict(median <= 0.2)
    print(f"   overhead = wait - child duration (from created_at)  {median:8.3f} s   "
          f"min {min(overhead):.3f}, max {max(overhead):.3f}  (target <= 0.200: {verdict})")  # fmt: skip
    from_started = statistics.median(s.node_wait - s.child_from_started for s in samples)
    print(f"   overhead with the child's duration from started_at  {from_started:8.3f} s")
    print(f"   wake-up: child finished_at -> parent node finished   {med(lambda s: s.wake):8.3f} s")


def report_fanout(
    raw: FanSample, flow: FanSample, size: int, parents: int, width: int, store_s: float
) -> None:
    shape = f"1 parent of {width}" if parents == 1 else f"{parents} parents of {width}"
    print(f"\n3. fan-out: {size} fire-and-forget children ({shape} parallel run_workflow nodes) "
          f"vs a raw group of {size} no-op tasks")  # fmt: skip
    print(f"   {'':44}{'to last stored end s':>22}{'client saw s':>14}")
    print(f"   {'raw Celery group (bench.noop)':44}{raw.stamped:>22.3f}{raw.observed:>14.3f}")
    print(f"   {'engine: until every child run finished':44}{flow.stamped:>22.3f}{flow.observed:>14.3f}")
    ratio = flow.stamped / raw.stamped
    print(f"   {'ratio engine / raw':44}{ratio:>22.2f}{flow.observed / raw.observed:>14.2f}"
          f"   (target <= 3.00: {_verdict(ratio <= 3)})")  # fmt: skip
    print(f"   per child: raw {_ms(raw.stamped / size)} ms, engine {_ms(flow.stamped / size)} ms")
    floor = ratio_floor(store_s * size, raw.stamped)
    print(f"   MongoDB's own time per child (its operations one at a time): {_ms(store_s)} ms, "
          f"{store_s * size:.2f} s for all;")  # fmt: skip
    print(f"   with the store's time alone the ratio cannot go below {floor:.2f} on this store")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `--quick` makes the unset counts small."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--triggers", type=int, help="trigger samples of each kind (default 200)")
    parser.add_argument("--waits", type=int, help="wait samples (default 10)")
    parser.add_argument("--fanout", type=int, help="fire-and-forget children (default 500)")
    parser.add_argument("--width", type=int, help="run_workflow nodes per fan-out parent (default --fanout)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per wait (default 600)")
    parser.add_argument("--quick", action="store_true", help="small counts: 20 triggers, 3 waits, fan-out 50")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.width = args.width or args.fanout
    if min(args.triggers, args.waits, args.fanout, args.width, args.concurrency) < 1:
        parser.error("counts must be at least 1")
    if args.fanout % args.width:
        parser.error("--fanout must be a multiple of --width")
    return args


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure_all(orch: Orchestrator, names: Names, args: argparse.Namespace) -> None:
    """Warm up, then the three measurements, each reported as soon as it is done."""
    _say("warming up…")
    for _ in range(5):
        raw_start(orch.app, args.timeout)
        api_start(orch, names.one, args.timeout)
        ff_start(orch, names.ff, args.timeout)
    raw_group(orch.app, 20, args.timeout)
    engine_fan(orch, names.warm_fan, 1, 4, args.timeout)

    _say(f"1. {args.triggers} trigger samples of each kind…")
    report_triggers(measure_triggers(orch, names, args.triggers, args.timeout, _say))

    _say(f"2. {args.waits} waits of ~{CHILD_SLEEP_S:g} s…")
    report_waits([measure_wait(orch, names, args.timeout) for _ in range(args.waits)])

    _say(f"3. fan-out of {args.fanout}…")
    orch.store.runs.delete_many({"workflow": {"$in": names.all()}})  # start from the same collection
    parents = args.fanout // args.width
    raw = raw_group(orch.app, args.fanout, args.timeout)
    flow = engine_fan(orch, names.fan, parents, args.width, args.timeout)
    store_s = store_time_per_child(orch, flow.parent_ids[0], names.one)
    report_fanout(raw, flow, args.fanout, parents, args.width, store_s)


def run_benchmark(args: argparse.Namespace, home: Path) -> None:
    """Start what is needed, measure, print, clean up."""
    with services(home) as found:
        queue, app, orch = queue_app(found)
        names = Names.for_tag(queue[6:])
        try:
            print(f"Redis:   {found.redis_url}  (redis-server {redis_version(found.redis_url)}; "
                  f"{found.redis_origin})")  # fmt: skip
            print(f"MongoDB: {found.mongo_url}  ({mongo_version(orch)}; {found.mongo_origin})")
            register_workflows(orch, names, args.width)
            with worker(
                app,
                found,
                queue,
                home / "worker.log",
                app_module="bench.run_workflow",
                concurrency=args.concurrency,
            ) as hostname:
                print(f"worker:  {hostname} (prefork, concurrency {args.concurrency}), queue {queue}")
                measure_all(orch, names, args)
        finally:
            orch.store.runs.delete_many({"workflow": {"$in": names.all()}})
            for name in names.all():
                orch.store.delete_workflow(name)
            orch.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 when it ran (whatever the figures)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="orch-bench-rw-") as tmp:
        run_benchmark(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
