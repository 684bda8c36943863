"""Prefect's side of `bench/peers/prefect.py`: serve the child flow, or measure and print JSON.

It runs under Prefect's own venv (`bench/peers/.venv-prefect`), never the project's, and is
started by `bench/peers/prefect.py` with `python -P` (Python 3.11's safe path), so that this
folder, which holds a `prefect.py` of its own, is not put in front of the real `prefect`
package on `sys.path`. The server address and home come from the environment the caller
sets (`PREFECT_API_URL`, `PREFECT_HOME`).

    python -P bench/peers/prefect_side.py serve
        `flow.serve()` of the child flow, as deployment `bench-child/bench`, until killed.
        Its poll frequency is Prefect's `PREFECT_RUNNER_POLL_FREQUENCY` (default 10 s),
        read from the environment; `serve()` has no parameter for it in Prefect 3.
    python -P bench/peers/prefect_side.py measure --out-dir DIR [--poll-interval 1] ...
        The three measures, each from a parent flow run in this process that calls
        `run_deployment`; one JSON object on stdout (everything else goes to stderr).

The child flow writes, under `out_dir`, a file named after its flow run id with the time
of its first line of code and of its last: that is how "the child's first line" is seen.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prefect  # type: ignore[import-not-found]
from prefect.client.orchestration import get_client  # type: ignore[import-not-found]
from prefect.client.schemas.filters import (  # type: ignore[import-not-found]
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.deployments import run_deployment  # type: ignore[import-not-found]
from prefect.runtime import flow_run as runtime_flow_run  # type: ignore[import-not-found]

CHILD_FLOW = "bench-child"
DEPLOYMENT_NAME = "bench"
DEPLOYMENT = f"{CHILD_FLOW}/{DEPLOYMENT_NAME}"
CHILD_SLEEP_S = 2.0
FILE_POLL_S = 0.01  # how often a child's file is looked for
API_POLL_S = 0.25  # how often the server is asked whether runs are over
API_PAGE = 200  # the server's largest page of flow runs by default


# -- the child flow, served by `serve` -------------------------------------------------------


def child(out_dir: str, sleep_s: float = 0.0) -> None:
    """The child: stamps its first line, sleeps `sleep_s`, stamps its last, writes both."""
    first = time.time()
    if sleep_s > 0:
        time.sleep(sleep_s)
    last = time.time()
    path = Path(out_dir) / f"{runtime_flow_run.id}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps({"first": first, "last": last}))
    partial.rename(path)  # atomic: a reader never sees half a file


child_flow = prefect.flow(name=CHILD_FLOW)(child)


def serve() -> None:
    """Serve the child flow until the process is stopped."""
    child_flow.serve(name=DEPLOYMENT_NAME, print_starting_message=False)


# -- parent flows, run in the measuring process ---------------------------------------------


def _poll_kwargs(poll_interval: float | None) -> dict[str, float]:
    """`run_deployment`'s poll interval when tuned; nothing (its default, 5 s) otherwise."""
    return {} if poll_interval is None else {"poll_interval": poll_interval}


def ask_one(out_dir: str, poll_interval: float | None) -> dict[str, Any]:
    """Parent flow body: start one child, fire-and-forget; when it asked and the run's id."""
    before = time.time()
    run = run_deployment(
        DEPLOYMENT, parameters={"out_dir": out_dir}, timeout=0, **_poll_kwargs(poll_interval)
    )
    return {"before": before, "id": str(run.id)}


def wait_one(out_dir: str, poll_interval: float | None) -> dict[str, Any]:
    """Parent flow body: start a 2 s child and wait for it (`timeout=None`)."""
    before = time.time()
    run = run_deployment(
        DEPLOYMENT,
        parameters={"out_dir": out_dir, "sleep_s": CHILD_SLEEP_S},
        timeout=None,
        **_poll_kwargs(poll_interval),
    )
    after = time.time()
    return {"before": before, "after": after, "id": str(run.id), "state": str(run.state.type.value)}


def ask_many(out_dir: str, count: int, poll_interval: float | None) -> dict[str, Any]:
    """Parent flow body: start `count` children, fire-and-forget, one after the other."""
    before = time.time()
    ids = [
        str(
            run_deployment(
                DEPLOYMENT, parameters={"out_dir": out_dir}, timeout=0, **_poll_kwargs(poll_interval)
            ).id
        )
        for _ in range(count)
    ]
    return {"before": before, "ids": ids}


ask_one_flow = prefect.flow(name="bench-parent-ask")(ask_one)
wait_one_flow = prefect.flow(name="bench-parent-wait")(wait_one)
ask_many_flow = prefect.flow(name="bench-parent-fan")(ask_many)


# -- waiting, with deadlines -----------------------------------------------------------------


def wait_for_file(path: Path, deadline: float) -> dict[str, float]:
    """The child's stamps, once its file is there."""
    while not path.exists():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"child flow run {path.stem}: its first line did not run in time")
        time.sleep(FILE_POLL_S)
    stamps: dict[str, float] = json.loads(path.read_text())
    return stamps


def runs_over(ids: list[str], deadline: float) -> list[Any]:
    """The flow runs `ids` once every one is in a final state (polled every 0.25 s)."""
    with get_client(sync_client=True) as client:
        while True:
            runs: list[Any] = []
            for start in range(0, len(ids), API_PAGE):
                page = [uuid.UUID(i) for i in ids[start : start + API_PAGE]]
                found = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)
                )
                runs.extend(found)
            if len(runs) == len(ids) and all(r.state is not None and r.state.is_final() for r in runs):
                break
            if time.monotonic() >= deadline:
                done = sum(1 for r in runs if r.state is not None and r.state.is_final())
                raise TimeoutError(f"{done} of {len(ids)} child flow runs over in time")
            time.sleep(API_POLL_S)
    failed = [r for r in runs if not r.state.is_completed()]
    if failed:
        raise RuntimeError(
            f"{len(failed)} child flow runs did not complete, e.g. {failed[0].id}: {failed[0].state}"
        )
    return runs


def wait_for_deployment(deadline: float) -> None:
    """Until `serve` has registered the child's deployment."""
    with get_client(sync_client=True) as client:
        while True:
            try:
                client.read_deployment_by_name(DEPLOYMENT)
                return
            except Exception as exc:  # ObjectNotFound until `serve` is up; a refused connection too
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"deployment {DEPLOYMENT} not served in time: {exc}") from exc
                time.sleep(0.5)


# -- the three measures ----------------------------------------------------------------------


def measure_trigger(out_dir: Path, poll: float | None, timeout: float) -> dict[str, float]:
    """Parent asks -> child's first line, then until the child run is over (one at a time)."""
    asked = ask_one_flow(str(out_dir), poll)
    deadline = time.monotonic() + timeout
    stamps = wait_for_file(out_dir / f"{asked['id']}.json", deadline)
    runs_over([asked["id"]], deadline)  # the next sample starts on an idle runner
    return {"trigger": stamps["first"] - float(asked["before"])}


def measure_wait(out_dir: Path, poll: float | None, timeout: float) -> dict[str, float]:
    """A parent waiting on a 2 s child: its elapsed time, the child's start and the wake-up."""
    waited = wait_one_flow(str(out_dir), poll)
    if waited["state"] != "COMPLETED":
        raise RuntimeError(f"the waited-for child {waited['id']} ended {waited['state']}")
    stamps = wait_for_file(out_dir / f"{waited['id']}.json", time.monotonic() + timeout)
    before, after = float(waited["before"]), float(waited["after"])
    return {
        "elapsed": after - before,
        "overhead": after - before - CHILD_SLEEP_S,
        "start": stamps["first"] - before,
        "wake": after - stamps["last"],
    }


def measure_fanout(out_dir: Path, count: int, poll: float | None, timeout: float) -> dict[str, float]:
    """`count` fire-and-forget children from one parent flow, until every one is over."""
    start = time.perf_counter()
    asked = ask_many_flow(str(out_dir), count, poll)
    runs = runs_over(list(asked["ids"]), time.monotonic() + timeout)
    observed = time.perf_counter() - start
    last_end = max(r.end_time.timestamp() for r in runs)
    return {
        "children": count,
        "stamped": last_end - float(asked["before"]),
        "observed": observed,
        "asking": float(asked["before"]),
    }


def _repeat(count: int, measure: Callable[[], dict[str, float]], label: str) -> list[dict[str, float]]:
    samples = []
    for i in range(count):
        samples.append(measure())
        print(f"  prefect: {label} {i + 1}/{count}", file=sys.stderr, flush=True)
    return samples


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up (one child, not counted), then the three measures."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    poll, timeout = args.poll_interval, args.timeout
    wait_for_deployment(time.monotonic() + timeout)
    measure_trigger(out_dir, poll, timeout)  # warm-up: the runner's first child imports everything
    triggers = _repeat(args.triggers, lambda: measure_trigger(out_dir, poll, timeout), "trigger")
    waits = _repeat(args.waits, lambda: measure_wait(out_dir, poll, timeout), "wait")
    print(f"  prefect: {args.fanout} fire-and-forget children…", file=sys.stderr, flush=True)
    fanout = measure_fanout(out_dir, args.fanout, poll, timeout)
    overheads = [w["overhead"] for w in waits]
    print(f"  prefect: trigger median {statistics.median(t['trigger'] for t in triggers):.3f} s, "
          f"wait overhead median {statistics.median(overheads):.3f} s, "
          f"fan-out {fanout['stamped']:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    return {"version": str(prefect.__version__), "triggers": triggers, "waits": waits, "fanout": fanout}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`serve`, or `measure` with its counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the child flow until killed")
    how = commands.add_parser("measure", help="the three measures; JSON on stdout")
    how.add_argument("--out-dir", required=True, help="where the children write their stamps")
    how.add_argument(
        "--poll-interval", type=float, help="run_deployment's poll_interval (default: Prefect's)"
    )
    how.add_argument("--triggers", type=int, default=10, help="trigger samples (default 10)")
    how.add_argument("--waits", type=int, default=5, help="wait samples (default 5)")
    how.add_argument("--fanout", type=int, default=100, help="fire-and-forget children (default 100)")
    how.add_argument("--timeout", type=float, default=600, help="seconds allowed per wait (default 600)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve, or measure and print one JSON object on stdout."""
    args = parse_args(argv)
    if args.command == "serve":
        serve()
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # Prefect's own prints must not mix with the JSON
        result = measure(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
