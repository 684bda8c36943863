"""Fault suite (`make faults`): runs end through worker kills, broker and store outages.

Each scenario starts its own services on a file database (so they can be stopped and started
again): a Redis (with or without its append-only file), an `nx-27017` MongoDB-wire server,
two `orchestrator worker` processes (prefork, concurrency 2) and `orchestrator beat` (the
sweeper and reconciler, with the default lease, sweep and stall settings unless told
otherwise). It triggers `--runs` parent runs of

    Fault Parent: set -> sleep 0.5 s -> run_workflow (wait) Fault Child -> user_list append
    Fault Child:  sleep 0.3 s -> user_list append

causes the fault for real, then waits (up to `--patience` s) for every run to end, and
prints per scenario: runs finished, failed or error, still not over, duplicate list items
and child runs (an effect that happened twice), and the time from the fault's end to the
last run's end.

Scenarios: `kill` (a worker's main or pool process SIGKILLed every 2-3 s for `--kill-for`
s; a killed main process is started again), `redis` (Redis stopped 10 s and started again
empty), `redis-aof` (the same with its append-only file), `mongo-10` and `mongo-18` (the
MongoDB-wire server stopped 10 or 18 s), `burst` (1,000 child runs at once), `cancel`
(runs of a ticking node cancelled; time from `cancel` to the node's last tick).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator import Orchestrator  # noqa: E402
from orchestrator.services.embedded import Service, free_port, start_mongo, start_redis  # noqa: E402
from orchestrator.services.processes import spawn, stop_process  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402
from orchestrator.store.user_lists import UserLists  # noqa: E402

CHILD = {
    "name": "Fault Child",
    "nodes": [
        {"id": "nap", "type": "sleep", "params": {"seconds": 0.3}},
        {"id": "note", "type": "user_list", "after": ["nap"],
         "params": {"list": "fault-child", "action": "append", "item": "{{ run.id }}"}},
    ],
}  # fmt: skip
PARENT = {
    "name": "Fault Parent",
    "nodes": [
        {"id": "start", "type": "set", "params": {"at": "{{ run.id }}"}},
        {"id": "nap", "type": "sleep", "after": ["start"], "params": {"seconds": 0.5}},
        {"id": "child", "type": "run_workflow", "after": ["nap"],
         "params": {"workflow": "Fault Child", "mode": "wait", "timeout_s": 900}},
        {"id": "note", "type": "user_list", "after": ["child"],
         "params": {"list": "fault-parent", "action": "append", "item": "{{ run.id }}"}},
    ],
}  # fmt: skip
TICKING = {"name": "Fault Ticking", "nodes": [{"id": "tick", "type": "tick", "params": {"key": "{{ run.id }}", "seconds": 60}}]}  # fmt: skip  # noqa: E501


@dataclass
class Cluster:
    """The services and processes of one scenario."""

    home: Path
    redis_port: int
    mongo_port: int
    aof: bool
    extra_env: dict[str, str]
    redis: Service | None = None
    mongo: Service | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/faults"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env.update(REDIS_URL=self.redis_url, MONGO_URL=self.mongo_url, ORCH_HOME=str(self.home))
        env.update(ORCH_PLUGINS="tests.plugins", PYTHONPATH=str(REPO), **self.extra_env)
        return env

    def start_redis(self) -> None:
        self.redis = start_redis(self.home, port=self.redis_port, persist=self.aof)

    def start_mongo(self) -> None:
        self.mongo = start_mongo(self.home, database="faults", port=self.mongo_port)

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        log = (self.home / f"worker-{index}.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            "orchestrator",
            "worker",
            "-c",
            "2",
            "-l",
            "WARNING",
            "-n",
            f"w{index}@%h",
        ]
        return spawn(cmd, log, env=self.env(), cwd=REPO)

    def start(self) -> None:
        self.start_redis()
        self.start_mongo()
        self.workers = [self.start_worker(i) for i in range(2)]
        beat_log = (self.home / "beat.log").open("ab")
        self.beat = spawn([sys.executable, "-m", "orchestrator", "beat", "-l", "WARNING"], beat_log,
                          env=self.env(), cwd=REPO)  # fmt: skip

    def stop(self) -> None:
        for process in [*self.workers, *([self.beat] if self.beat else [])]:
            stop_process(process, timeout=20)
        for service in (self.mongo, self.redis):
            if service is not None:
                service.stop()


@contextmanager
def cluster(aof: bool, extra_env: dict[str, str]) -> Iterator[tuple[Cluster, Orchestrator]]:
    with tempfile.TemporaryDirectory(prefix="orch-faults-") as tmp:
        built = Cluster(Path(tmp), free_port(), free_port(), aof, extra_env)
        built.start()
        settings = Settings(
            REDIS_URL=built.redis_url, MONGO_URL=built.mongo_url, ORCH_PLUGINS="tests.plugins"
        )
        orch = Orchestrator(settings=settings)
        try:
            for spec in (CHILD, PARENT, TICKING):
                orch.register(spec)
            yield built, orch
        finally:
            orch.close()
            built.stop()


@dataclass
class Outcome:
    scenario: str
    runs: int
    statuses: Counter[Any]
    duplicates: int
    recovered_s: float | None
    note: str = ""


def wait_all_over(orch: Orchestrator, run_ids: list[str], patience: float) -> float:
    """Wait until every run is over (or `patience` passes); when the last one ended."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            runs = [orch.get_run(run_id) for run_id in run_ids]
        except Exception:  # the store is away (a fault): look again
            time.sleep(1)
            continue
        if all(run.is_over for run in runs):
            ends = [run.finished_at.timestamp() for run in runs if run.finished_at]
            return max(ends, default=time.time())
        time.sleep(1)
    return time.time()


def outcome(name: str, orch: Orchestrator, parents: list[str], fault_end: float, patience: float) -> Outcome:
    last_end = wait_all_over(orch, parents, patience)
    children = [f"{p}.child" for p in parents]
    statuses = Counter(orch.get_run(p).status for p in parents)
    lists = UserLists(orch.store.db)
    seen = Counter(lists.read("fault-parent")) + Counter(lists.read("fault-child"))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    duplicates += orch.store.runs.count_documents({"parent_run_id": {"$in": parents}}) - sum(
        1 for c in children if orch.store.runs.count_documents({"_id": c}, limit=1)
    )
    not_over = sum(n for status, n in statuses.items() if status in ("pending", "running"))
    everyone = parents + children
    resumed = orch.store.runs.count_documents({"_id": {"$in": everyone}, "epoch": {"$gt": 0}})
    note = f"{resumed} of {len(everyone)} runs resumed by the reconciler"
    errors = Counter(
        f"{doc['status']}: {doc.get('error')}"
        for doc in orch.store.runs.find({"_id": {"$in": everyone}, "status": {"$in": ["failed", "error"]}})
    )
    note += "".join(f"\n    {n} x {error}" for error, n in errors.most_common(5))
    after = None if not_over else max(last_end - fault_end, 0.0)
    return Outcome(name, len(parents), statuses, duplicates, after, note)


def trigger_parents(orch: Orchestrator, n: int) -> list[str]:
    return [orch.trigger("Fault Parent") for _ in range(n)]


def kill_workers(built: Cluster, seconds: float, rng: random.Random, each_round: Callable[[], None]) -> float:
    """Every 2-3 s for `seconds`: call `each_round` (it starts runs), then SIGKILL a worker's
    main process (and start it again) or one of its pool processes."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        each_round()
        time.sleep(rng.uniform(2, 3))
        index = rng.randrange(len(built.workers))
        main = built.workers[index]
        children = Path(f"/proc/{main.pid}/task/{main.pid}/children")
        pool = [int(p) for p in children.read_text().split()] if children.exists() else []
        if pool and rng.random() < 0.5:
            os.kill(rng.choice(pool), signal.SIGKILL)
            continue
        for pid in [main.pid, *pool]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        main.wait()
        built.workers[index] = built.start_worker(index)
    return time.time()


def scenario_kill(orch: Orchestrator, built: Cluster, args: argparse.Namespace) -> Outcome:
    """The runs are started over the first two thirds of the kills, so that kills hit them
    at every stage (a node running, a wait, a chain's next step in flight)."""
    rounds = max(int(args.kill_for * 2 / 3 / 2.5), 1)
    per_round = -(-args.runs // rounds)
    parents: list[str] = []

    def start_some() -> None:
        parents.extend(trigger_parents(orch, min(per_round, args.runs - len(parents))))

    fault_end = kill_workers(built, args.kill_for, random.Random(args.seed), start_some)
    return outcome("kill", orch, parents, fault_end, args.patience)


def outage(stop: Callable[[], None], start: Callable[[], None], seconds: float) -> float:
    stop()
    time.sleep(seconds)  # the outage itself: a fixed, measured length
    start()
    return time.time()


def scenario_redis(orch: Orchestrator, built: Cluster, args: argparse.Namespace) -> Outcome:
    parents = trigger_parents(orch, args.runs)
    time.sleep(1.0)  # let the runs get going: the outage hits them mid-way
    assert built.redis is not None
    fault_end = outage(built.redis.stop, built.start_redis, 10)
    return outcome("redis-aof" if built.aof else "redis", orch, parents, fault_end, args.patience)


def scenario_mongo(seconds: float) -> Callable[[Orchestrator, Cluster, argparse.Namespace], Outcome]:
    def run(orch: Orchestrator, built: Cluster, args: argparse.Namespace) -> Outcome:
        parents = trigger_parents(orch, args.runs)
        time.sleep(1.0)
        assert built.mongo is not None
        fault_end = outage(built.mongo.stop, built.start_mongo, seconds)
        return outcome(f"mongo-{seconds:g}", orch, parents, fault_end, args.patience)

    return run


def scenario_burst(orch: Orchestrator, built: Cluster, args: argparse.Namespace) -> Outcome:
    started = time.time()
    runs = [orch.trigger("Fault Child") for _ in range(args.burst)]
    last_end = wait_all_over(orch, runs, args.patience)
    statuses = Counter(orch.get_run(r).status for r in runs)
    seen = Counter(UserLists(orch.store.db).read("fault-child"))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    return Outcome(
        "burst", len(runs), statuses, duplicates, last_end - started, "time from the first trigger"
    )


def scenario_cancel(orch: Orchestrator, built: Cluster, args: argparse.Namespace) -> Outcome:
    runs = [orch.trigger("Fault Ticking") for _ in range(4)]  # one per worker slot
    ticks = orch.store.db["test_counts"]
    deadline = time.monotonic() + 60
    while ticks.count_documents({"_id": {"$in": runs}}) < len(runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    stops = []
    for run_id in runs:
        cancelled_at = time.time()
        orch.cancel(run_id)
        time.sleep(2.5)  # look after the promised 2 s
        last = ticks.find_one({"_id": run_id}) or {}
        stops.append(max(float(last.get("at", cancelled_at)) - cancelled_at, 0.0))
    statuses = Counter(orch.get_run(r).status for r in runs)
    note = "cancel to the node's last tick: " + ", ".join(f"{s:.2f} s" for s in stops)
    return Outcome("cancel", len(runs), statuses, 0, max(stops), note)


SCENARIOS: dict[str, tuple[bool, Callable[[Orchestrator, Cluster, argparse.Namespace], Outcome]]] = {
    "kill": (False, scenario_kill),
    "redis": (False, scenario_redis),
    "redis-aof": (True, scenario_redis),
    "mongo-10": (False, scenario_mongo(10)),
    "mongo-18": (False, scenario_mongo(18)),
    "burst": (False, scenario_burst),
    "cancel": (False, scenario_cancel),
}


def show(results: list[Outcome]) -> None:
    print(f"\n{'scenario':<10} {'runs':>5} {'finished':>9} {'failed/error':>13} {'not over':>9} "
          f"{'duplicates':>11} {'last end after fault':>21}")  # fmt: skip
    for r in results:
        bad = r.statuses["failed"] + r.statuses["error"]
        stuck = r.statuses["pending"] + r.statuses["running"]
        after = "-" if r.recovered_s is None else f"{r.recovered_s:.1f} s"
        finished = r.statuses["finished"] if r.scenario != "cancel" else r.statuses["cancelled"]
        columns = f"{r.scenario:<10} {r.runs:>5} {finished:>9} {bad:>13} {stuck:>9} {r.duplicates:>11}"
        print(f"{columns} {after:>21}" + (f"   ({r.note})" if r.note else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"of {', '.join(SCENARIOS)} (all)")
    parser.add_argument("--runs", type=int, default=50, help="parent runs per scenario (default 50)")
    parser.add_argument("--burst", type=int, default=1000, help="runs of the burst (default 1000)")
    parser.add_argument("--kill-for", type=float, default=60, help="seconds of worker kills (default 60)")
    parser.add_argument(
        "--patience", type=float, default=600, help="seconds to wait for the runs (default 600)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the workers and beat, e.g. ORCH_LEASE_S=10")  # fmt: skip
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"no scenario named {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    args.scenarios = args.scenarios or list(SCENARIOS)
    extra = dict(pair.split("=", 1) for pair in args.env)
    print(f"settings: {extra or 'defaults (ORCH_LEASE_S 30, ORCH_SWEEP_S 15, ORCH_STALL_S 30)'}")
    results = []
    for name in args.scenarios:
        aof, scenario = SCENARIOS[name]
        print(f"-- {name}", flush=True)
        with cluster(aof, extra) as (built, orch):
            results.append(scenario(orch, built, args))
        show(results[-1:])
    show(results)


if __name__ == "__main__":
    main()
