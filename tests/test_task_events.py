"""What Flower sees: Celery's task events of node messages, read by Celery's own event state
(the model Flower keeps), from a real worker: a failed node is a failed task, no message is
left `STARTED`, a waiting node's polls show no traceback, and every message says which run
and node it is for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery.events.state import State

from orchestrator import Orchestrator
from tests.conftest import wait_for, workflow

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(90)]


class EventLog:
    """Every event the broker carries while a test runs, and Celery's state built from them."""

    def __init__(self, orch: Orchestrator) -> None:
        self.events: list[dict[str, Any]] = []
        self.state = State()
        self._app = orch.app
        self._ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _on(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.state.event(event)

    def _capture(self) -> None:
        with self._app.connection_for_read() as connection:
            receiver = self._app.events.Receiver(connection, handlers={"*": self._on})
            declared = receiver.on_consume_ready

            def ready(*args: Any, **kwargs: Any) -> None:
                declared(*args, **kwargs)
                self._ready.set()  # the event queue exists: nothing sent from now on is missed

            receiver.on_consume_ready = ready
            self._receiver = receiver
            receiver.capture(limit=None, timeout=None, wakeup=False)  # until `should_stop`

    def __enter__(self) -> EventLog:
        self._thread.start()
        assert self._ready.wait(10), "the event receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)

    def tasks_of(self, run_id: str) -> list[Any]:
        return [t for t in self.state.tasks.values() if run_id in (t.kwargs or "")]

    def settled(self, run_id: str, nodes: set[str]) -> bool:
        """A task of each of `nodes` was seen, and every task of the run is in a final state
        (none received or started still)."""
        tasks = self.tasks_of(run_id)
        seen = {t.kwargs.split("node ")[-1].strip("'") for t in tasks if "node " in t.kwargs}
        return nodes <= seen and all(t.state not in ("RECEIVED", "STARTED", "PENDING") for t in tasks)


@pytest.fixture
def events(orch: Orchestrator) -> Iterator[EventLog]:
    with EventLog(orch) as log:
        yield log


def test_a_failed_node_is_a_failed_task_and_the_run_goes_on(orch: Orchestrator, events: EventLog) -> None:
    orch.register(
        workflow(
            "Fails",
            {"id": "boom", "type": "fail", "params": {"message": "no data for XYZ"}},
            {"id": "after", "type": "set", "params": {"x": 1}},
            {"id": "end", "type": "set", "params": {"y": 1}, "after": ["boom", "after"]},
        )
    )
    run = orch.run("Fails", timeout=30)
    assert run.nodes["boom"].status == "failed" and run.nodes["end"].status == "skipped"
    wait_for(lambda: events.settled(run.id, {"boom", "after", "end"}), what="every task of the run to settle")
    by_node = {t.kwargs.split("node ")[-1]: t for t in events.tasks_of(run.id) if "node " in t.kwargs}
    assert by_node["'boom'"].state == "FAILURE"
    assert "no data for XYZ" in by_node["'boom'"].exception
    assert "RuntimeError" in by_node["'boom'"].traceback
    assert by_node["'after'"].state == "SUCCESS"
    failed = [e for e in events.events if e["type"] == "task-failed"]
    assert len(failed) == 1  # counted once on Flower's dashboard
    succeeded_ids = {e["uuid"] for e in events.events if e["type"] == "task-succeeded"}
    assert by_node["'boom'"].uuid not in succeeded_ids


def test_every_message_names_its_run_and_node_and_none_stays_started(
    orch: Orchestrator, events: EventLog
) -> None:
    orch.register(workflow("Child", {"id": "nap", "type": "sleep", "params": {"seconds": 1}}))
    orch.register(
        workflow(
            "Parent",
            {"id": "first", "type": "set", "params": {"x": 1}},
            {"id": "second", "type": "set", "params": {"x": 2}, "after": ["first"]},
            {
                "id": "call",
                "type": "run_workflow",
                "params": {"workflow": "Child", "mode": "wait", "poll_interval_s": 0.2},
                "after": ["second"],
            },
            {"id": "fan", "type": "set", "params": {"x": 3}},
        )
    )
    run = orch.run("Parent", timeout=30)
    assert run.status == "finished"
    try:
        wait_for(
            lambda: events.settled(run.id, {"first", "second", "call", "fan"}),
            what="the run's tasks to settle",
        )
    except AssertionError:
        print([(t.name, t.kwargs, t.state, t.uuid) for t in events.state.tasks.values()])
        print([(e["type"], e.get("uuid")) for e in events.events if e["type"].startswith("task")])
        raise
    received = [e for e in events.events if e["type"] == "task-received" and run.id in str(e.get("kwargs"))]
    assert received
    for event in received:
        assert event["kwargs"].startswith(f"run {run.id}"), event
        handed = ("(the run document the node before handed on)", "(the run document as it was created)")
        assert event["args"] in ("()", *handed), event
    retried = [e for e in events.events if e["type"] == "task-retried"]
    assert retried, "the waiting node polled"
    for event in retried:
        assert event["traceback"] == "" and "Retry" not in event["exception"], event
    assert all(t.state != "STARTED" for t in events.tasks_of(run.id))
    names = {t.name for t in events.tasks_of(run.id)}
    assert None not in names
