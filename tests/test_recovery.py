"""Runs end through faults: the run document drives recovery, not the broker.

Each fault is caused for real: a worker (main and pool processes) SIGKILLed mid-node, the
broker's messages lost (its database flushed), the MongoDB-wire server stopped and started
again on the same files, a running node cancelled. The reconciler is called the way `orchestrator
beat` calls it, until the run is over; every run must end with the right status and no
node's effect counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from orchestrator import Orchestrator
from orchestrator.constants import RUN_OVER
from orchestrator.engine.app import OrchestratorApp
from orchestrator.engine.launcher import relaunch_undispatched
from orchestrator.engine.reconciler import reconcile
from orchestrator.services.embedded import Service, free_port, start_mongo
from orchestrator.settings import Settings
from orchestrator.store.models import Run
from tests.conftest import PLUGINS, WorkerProcess, wait_for, workflow

LEASE_S = 3.0  # short, so that a lost worker is noticed within seconds
STALL_S = 2.0
FAST = {"ORCH_LEASE_S": str(LEASE_S), "ORCH_STALL_S": str(STALL_S), "ORCH_OUTAGE_RETRY_S": "60"}


@dataclass
class Stack:
    """An orchestrator on a broker of its own, with workers started on demand."""

    settings: Settings
    orch: Orchestrator
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            self.settings, self.orch, "--pool=prefork", "--concurrency=1", name="recovery", env=FAST
        ).wait_ready()
        self.workers.append(worker)
        return worker

    def drive(self, run_id: str, timeout: float = 60) -> Run:
        """Reconcile, as beat does, until the run is over."""

        def over() -> Run | None:
            reconcile(self.orch.app)
            run = self.orch.get_run(run_id)
            return run if run.is_over else None

        return wait_for(over, timeout=timeout, what=f"run {run_id} to end")

    def count(self, key: str) -> int:
        doc = self.orch.store.db["test_counts"].find_one({"_id": key})
        return int(doc["n"]) if doc else 0


def sweep(app: OrchestratorApp, grace_s: float) -> None:
    """What `orchestrator beat`'s sweeper does for runs: send runs never sent, reconcile."""
    relaunch_undispatched(app, grace_s)
    reconcile(app)


def make_settings(base: Settings, redis_url: str, mongo_url: str) -> Settings:
    given = {"REDIS_URL": redis_url, "MONGO_URL": mongo_url, "ORCH_PLUGINS": PLUGINS, "ORCH_HOME": base.home}
    return Settings.model_validate(given | FAST)


@contextmanager
def stack_on(settings: Settings, redis_url: str, mongo_url: str) -> Iterator[Stack]:
    """A `Stack` on these servers (the broker emptied first); its workers stopped and the
    broker emptied again after."""
    own = make_settings(settings, redis_url, mongo_url)
    redis.Redis.from_url(redis_url).flushdb()
    with Orchestrator(settings=own) as orch:
        built = Stack(own, orch)
        try:
            yield built
        finally:
            for worker in built.workers:
                worker.stop()
            redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def stack(settings: Settings, spare_redis_url: str) -> Iterator[Stack]:
    """A `Stack` on the suite's MongoDB (its runs and counts emptied) and a broker of its own."""
    with stack_on(settings, spare_redis_url, settings.mongo_url) as built:
        built.orch.store.runs.delete_many({})
        built.orch.store.db["test_counts"].delete_many({})
        yield built


def chain_of(name: str, middle: dict[str, object]) -> dict[str, object]:
    """count `before` -> the middle node -> count `after`."""
    return workflow(
        name,
        {"id": "before", "type": "count", "params": {"key": f"{name}-before"}},
        {"id": "middle", "after": ["before"], **middle},
        {"id": "after", "type": "count", "after": ["middle"], "params": {"key": f"{name}-after"}},
    )


@pytest.mark.timeout(120)
def test_a_node_whose_worker_is_killed_runs_again_and_the_run_finishes(stack: Stack) -> None:
    stack.orch.register(chain_of("Killed", {"type": "block", "params": {"seconds": 2}}))
    worker = stack.start_worker()
    run_id = stack.orch.trigger("Killed")
    wait_for(lambda: stack.orch.get_run(run_id).nodes["middle"].status == "running", what="middle to run")
    worker.kill()
    stack.start_worker()
    run = stack.drive(run_id)
    assert run.status == "finished", run.error
    assert run.nodes["middle"].attempts == 2  # the lost attempt counts
    assert (stack.count("Killed-before"), stack.count("Killed-after")) == (1, 1)


@pytest.mark.timeout(150)
def test_fire_and_forget_children_through_a_killed_worker_each_run_once(stack: Stack) -> None:
    width = 6
    stack.orch.register(
        workflow(
            "Leaf",
            {"id": "once", "type": "count", "params": {"key": "{{ run.id }}"}},
            {"id": "slow", "type": "block", "after": ["once"], "params": {"seconds": 0.4}},
        )
    )
    calls = [
        {"id": f"c{i}", "type": "run_workflow", "params": {"workflow": "Leaf", "mode": "fire_and_forget"}}
        for i in range(width)
    ]
    stack.orch.register(workflow("Fan", *calls))
    worker = stack.start_worker()
    parent_id = stack.orch.trigger("Fan")
    children = [f"{parent_id}.c{i}" for i in range(width)]

    def a_child_blocks() -> bool:
        return any(
            doc["nodes"]["slow"]["status"] == "running"
            for doc in stack.orch.store.runs.find({"_id": {"$in": children}}, {"nodes": 1})
        )

    wait_for(a_child_blocks, what="a child's slow node")
    worker.kill()
    stack.start_worker()

    def all_over() -> bool:
        sweep(stack.orch.app, grace_s=0)
        runs = [
            stack.orch.store.runs.find_one({"_id": run_id}, {"status": 1})
            for run_id in [parent_id, *children]
        ]
        return all(run is not None and run["status"] in RUN_OVER for run in runs)

    wait_for(all_over, timeout=120, what="the parent and every child to end")
    assert stack.orch.get_run(parent_id).status == "finished"
    assert [stack.orch.get_run(child).status for child in children] == ["finished"] * width
    assert [stack.count(child) for child in children] == [1] * width  # no child ran twice


@pytest.mark.timeout(120)
def test_messages_lost_with_the_broker_are_sent_again_from_the_run_document(stack: Stack) -> None:
    stack.orch.register(chain_of("Lost", {"type": "count", "params": {"key": "Lost-middle"}}))
    run_id = stack.orch.trigger("Lost")  # no worker yet: its first message waits on the broker
    redis.Redis.from_url(stack.settings.redis_url).flushdb()  # Redis restarted without persistence
    stack.start_worker()
    run = stack.drive(run_id)
    assert run.status == "finished", run.error
    assert [stack.count(f"Lost-{n}") for n in ("before", "middle", "after")] == [1, 1, 1]


@pytest.mark.timeout(120)
def test_a_message_thought_lost_that_turns_up_later_changes_nothing(stack: Stack) -> None:
    stack.orch.register(chain_of("Twice", {"type": "count", "params": {"key": "Twice-middle"}}))
    run_id = stack.orch.trigger("Twice")  # its message waits: no worker yet
    doc = stack.orch.store.get_run_document(run_id)
    from orchestrator.engine.reconciler import resume

    assert resume(stack.orch.app, doc, "a test says so")  # the rest sent again, a new epoch
    stack.start_worker()  # both the first message and the new ones are delivered
    run = stack.drive(run_id)
    assert run.status == "finished"
    assert [stack.count(f"Twice-{n}") for n in ("before", "middle", "after")] == [1, 1, 1]


@pytest.fixture
def file_mongo(tmp_path: Path) -> Iterator[Callable[[], Service]]:
    """A MongoDB-wire server on its own files and port, started (and started again) on demand."""
    port, running = free_port(), []

    def start() -> Service:
        running.append(start_mongo(tmp_path / "mongo", database="recovery", port=port))
        return running[-1]

    yield start
    for service in running:
        service.stop()


@pytest.mark.timeout(150)
def test_a_store_outage_pauses_a_run_and_it_finishes_when_the_store_is_back(
    settings: Settings, spare_redis_url: str, file_mongo: Callable[[], Service]
) -> None:
    mongo = file_mongo()
    with stack_on(settings, spare_redis_url, mongo.url) as built:
        orch = built.orch
        orch.register(chain_of("Outage", {"type": "block", "params": {"seconds": 1.5}}))
        worker = built.start_worker()
        run_id = orch.trigger("Outage")
        wait_for(lambda: orch.get_run(run_id).nodes["middle"].status == "running", what="middle to run")
        mongo.stop()
        wait_for(lambda: "trying again" in worker.log.read_text(), timeout=30, what="a retry in the log")
        file_mongo()  # back, on the same files and port
        run = built.drive(run_id, timeout=90)
        assert run.status == "finished", run.error
        assert built.count("Outage-after") == 1


@pytest.mark.timeout(150)
def test_a_store_outage_as_a_pure_node_records_its_end_pauses_the_run_not_fails_the_node(
    settings: Settings, spare_redis_url: str, file_mongo: Callable[[], Service], tmp_path: Path
) -> None:
    # A pure first node reads nothing (its launch handed it the document): the store is first
    # needed for its end. Down then, the message waits for the store, as a start would; the
    # node's end is not a failure, even when the store is back while a failure could be written.
    mongo = file_mongo()
    opened = tmp_path / "gate"
    with stack_on(settings, spare_redis_url, mongo.url) as built:
        orch = built.orch
        orch.register(
            workflow(
                "Gated",
                {"id": "gate", "type": "gate", "params": {"path": str(opened)}},
                {"id": "after", "type": "count", "after": ["gate"], "params": {"key": "Gated-after"}},
            )
        )
        run_id = orch.trigger("Gated")  # before any worker: the message waits on the broker
        mongo.stop()
        # The worker's process meets the store first while it is down (as a process does in
        # `make faults`): its client then waits for it (5 s) on each call, not failing at once.
        built.start_worker()
        wait_for(lambda: Path(f"{opened}.entered").exists(), what="the gate node to start")
        opened.touch()  # the node returns: its end meets a store that does not answer
        time.sleep(6.5)  # the outage's rest, a fixed length: past one wait for the store (5 s), not two
        file_mongo()
        run = built.drive(run_id, timeout=90)
        assert run.nodes["gate"].status == "finished", run.nodes["gate"].error
        assert run.status == "finished", run.error
        assert built.count("Gated-after") == 1


@pytest.mark.usefixtures("worker")
@pytest.mark.timeout(60)
def test_cancel_stops_a_running_node_within_2_s(orch: Orchestrator) -> None:
    orch.register(
        workflow("Ticking", {"id": "tick", "type": "tick", "params": {"key": "ticks", "seconds": 20}})
    )
    run_id = orch.trigger("Ticking")
    wait_for(lambda: orch.store.db["test_counts"].find_one({"_id": "ticks"}), what="the node to tick")
    cancelled_at = time.time()
    assert orch.cancel(run_id) == [run_id]

    def last_tick() -> float:
        doc = orch.store.db["test_counts"].find_one({"_id": "ticks"})
        return float(doc["at"]) if doc else 0.0

    def quiet() -> bool:  # no tick for 0.5 s
        return time.time() - last_tick() > 0.5

    wait_for(quiet, timeout=5, what="the node to stop ticking")
    assert last_tick() - cancelled_at < 2.0
    assert orch.get_run(run_id).status == "cancelled"


@pytest.mark.usefixtures("worker")
@pytest.mark.timeout(60)
def test_cancel_ends_waiting_nodes_as_cancelled_and_cancels_the_child(orch: Orchestrator) -> None:
    orch.register(workflow("Slow Child", {"id": "nap", "type": "sleep", "params": {"seconds": 20}}))
    orch.register(
        workflow(
            "Waiting Parent",
            {"id": "child", "type": "run_workflow", "params": {"workflow": "Slow Child", "mode": "wait"}},
        )
    )
    run_id = orch.trigger("Waiting Parent")
    wait_for(lambda: orch.get_run(run_id).nodes["child"].status == "waiting", what="the parent to wait")
    assert sorted(orch.cancel(run_id)) == sorted([run_id, f"{run_id}.child"])
    assert orch.get_run(run_id).nodes["child"].status == "cancelled"
    assert orch.get_run(f"{run_id}.child").status == "cancelled"


def processes_named(marker: str) -> list[int]:
    """Pids of the processes whose command line holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.usefixtures("worker")
@pytest.mark.timeout(60)
def test_cancel_stops_a_python_node_and_every_process_its_code_started(orch: Orchestrator) -> None:
    nap = f"300.{time.time_ns() % 10**6:06d}"  # a `sleep` command line nobody else has
    code = f"import subprocess, time\nsubprocess.Popen(['sleep', '{nap}'])\ntime.sleep(300)"
    orch.register(workflow("Python Cancel", {"id": "code", "type": "python", "params": {"code": code}}))
    run_id = orch.trigger("Python Cancel")
    wait_for(lambda: processes_named(nap), what="the code's own child process")
    assert orch.cancel(run_id) == [run_id]
    wait_for(lambda: processes_named(nap) == [], timeout=2, what="the code's processes to stop")
    assert orch.get_run(run_id).nodes["code"].status == "cancelled"
