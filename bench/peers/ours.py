"""Our side of the peer comparison: the same three measures as Prefect's, on our engine.

It reuses `bench/run_workflow.py` (its workflows, its worker app `bench.run_workflow` and
its fan-out measure) and `bench/engine.py` (services, worker), which print no machine-readable
figures of their own, and times what the Prefect side times, from the run documents:

1. trigger -> the child's first line: a parent whose `run_workflow` node starts a one-node
   child fire-and-forget; the child's node `started_at` minus the parent node's `started_at`
   (a `run_workflow` node is not pure: its `started_at` is taken in the worker once it is
   marked running, just before its body asks for the child);
2. wait on a 2 s child: a parent whose `run_workflow` node waits (its `poll_interval_s`
   default, 1.5 s) on a child whose one node sleeps 2 s; elapsed = the parent node's
   `finished_at` minus the earlier of its `started_at` and the child's `created_at`;
   overhead = elapsed - 2 s; also the child's start (its sleep node's `started_at`) and the
   wake-up (parent node `finished_at` - the sleep node's `finished_at`);
3. `fanout` fire-and-forget children from one parent of `fanout` parallel nodes, from the
   trigger until the last child run's `finished_at` (`run_workflow.engine_fan`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.engine import queue_app, services, worker
from bench.peers.report import Figures
from bench.run_workflow import CHILD_SLEEP_S, Names, engine_fan, finished_run, register_workflows, timestamp
from orchestrator.api import Orchestrator

WARM_UPS = 3


def trigger_sample(orch: Orchestrator, names: Names, timeout: float) -> float:
    """Parent node started_at -> child node started_at, fire-and-forget."""
    node = finished_run(orch, orch.trigger(names.ff), timeout).nodes["go"]
    output: Any = node.output
    child = finished_run(orch, str(output["run_id"]), timeout)
    return timestamp(child.nodes["n"].started_at) - timestamp(node.started_at)


def wait_sample(orch: Orchestrator, names: Names, timeout: float) -> dict[str, float]:
    """A parent node waiting on a 2 s child: elapsed, overhead, the child's start, the wake-up."""
    node = finished_run(orch, orch.trigger(names.waiter), timeout).nodes["w"]
    output: Any = node.output
    if output.get("targetStatus") != "finished":
        raise RuntimeError(f"the wait ended {output}")
    child = orch.get_run(str(output["run_id"]))
    sleep = child.nodes["s"]
    before = min(timestamp(node.started_at), timestamp(child.created_at))
    elapsed = timestamp(node.finished_at) - before
    return {
        "elapsed": elapsed,
        "overhead": elapsed - CHILD_SLEEP_S,
        "start": timestamp(sleep.started_at) - before,
        "wake": timestamp(node.finished_at) - timestamp(sleep.finished_at),
    }


def _repeat(count: int, sample: Callable[[], Any], label: str, say: Callable[[str], None]) -> list[Any]:
    samples = []
    for i in range(count):
        samples.append(sample())
        if (i + 1) % 5 == 0 or i + 1 == count:
            say(f"  ours: {label} {i + 1}/{count}")
    return samples


@contextlib.contextmanager
def engine(home: Path, fanout: int, concurrency: int) -> Iterator[tuple[Orchestrator, Names]]:
    """Redis, MongoDB and a worker as `bench/run_workflow.py` has them; the workflows registered."""
    with services(home) as found:
        queue, app, orch = queue_app(found)
        names = Names.for_tag(queue[6:])
        try:
            register_workflows(orch, names, fanout)
            with worker(
                app,
                found,
                queue,
                home / "worker.log",
                app_module="bench.run_workflow",
                concurrency=concurrency,
            ):
                yield orch, names
        finally:
            orch.store.runs.delete_many({"workflow": {"$in": names.all()}})
            for name in names.all():
                orch.store.delete_workflow(name)
            orch.close()


def measure(
    home: Path,
    triggers: int,
    waits: int,
    fanout: int,
    timeout: float,
    say: Callable[[str], None],
    concurrency: int = 2,
) -> Figures:
    """Warm up, then the three measures, one after the other."""
    with engine(home, fanout, concurrency) as (orch, names):
        say("ours: warming up…")
        for _ in range(WARM_UPS):
            trigger_sample(orch, names, timeout)
        engine_fan(orch, names.warm_fan, 1, 4, timeout)
        trigger = _repeat(triggers, lambda: trigger_sample(orch, names, timeout), "trigger", say)
        wait = _repeat(waits, lambda: wait_sample(orch, names, timeout), "wait", say)
        say(f"  ours: {fanout} fire-and-forget children…")
        orch.store.runs.delete_many({"workflow": {"$in": names.all()}})  # start from the same collection
        fan = engine_fan(orch, names.fan, 1, fanout, timeout)
    return Figures(trigger, wait, {"children": fanout, "stamped": fan.stamped, "observed": fan.observed})
