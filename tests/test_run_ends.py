"""Waiters hear of a run's end from a Redis notice, not at their next read of the document."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from orchestrator import Orchestrator
from orchestrator.engine.run_ends import RunEndListener, announce_run_end
from orchestrator.services.embedded import free_port
from orchestrator.store.models import Run
from tests.conftest import wait_for, workflow

NEVER = 60.0  # a poll interval no test waits out: a wait that returns sooner heard the notice


@pytest.mark.usefixtures("worker")
def test_wait_returns_on_the_end_notice_long_before_its_next_read(orch: Orchestrator) -> None:
    orch.register(workflow("Nap", {"id": "nap", "type": "sleep", "params": {"seconds": 0.5}}))
    reads: list[Run] = []
    started = time.monotonic()
    run = orch.wait(orch.trigger("Nap"), timeout=2 * NEVER, on_progress=reads.append, poll_s=NEVER)
    assert run.status == "finished"
    assert time.monotonic() - started < NEVER / 2
    assert len(reads) <= 2  # one read before the end, one after the notice


@pytest.mark.usefixtures("worker")
def test_a_cancelled_run_is_announced_to_its_waiter(orch: Orchestrator) -> None:
    orch.register(workflow("Nap", {"id": "nap", "type": "sleep", "params": {"seconds": 1}}))
    run_id = orch.trigger("Nap")
    wait_for(lambda: orch.get_run(run_id).status == "running", what="the run to start")
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(orch.wait, run_id, 2 * NEVER, None, NEVER)
        assert orch.cancel(run_id) == [run_id]
        assert waiting.result(timeout=NEVER / 2).status == "cancelled"


def test_without_redis_a_listener_falls_back_to_its_timeout_and_announcing_does_not_raise() -> None:
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with RunEndListener(nowhere, "some-run") as listener:
        assert listener.wait_for_notice(0.05) is False
    announce_run_end(nowhere, "some-run", "finished")
