"""The run store on the suite's MongoDB: compare-and-set transitions hold under races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from orchestrator import Orchestrator
from orchestrator.errors import DocumentTooLarge, RunNotFound, WorkflowNotFound
from orchestrator.store.models import new_run_document, new_run_id, node_state
from orchestrator.store.run_store import NodeStart, RunStore
from tests.conftest import new_run, not_none


@pytest.fixture
def store(orch: Orchestrator) -> RunStore:
    return orch.store


def test_creating_a_run_twice_returns_the_first(store: RunStore) -> None:
    run_id = new_run_id()
    doc = new_run_document(
        run_id=run_id, workflow="W", node_ids=["a"], variables={"x": 1}, trigger={"type": "api"}
    )
    _, created = store.create_run(doc)
    again, created_again = store.create_run(doc | {"variables": {"x": 2}})
    assert created and not created_again and again["variables"] == {"x": 1}


def test_only_one_of_many_racing_finishers_ends_the_run(store: RunStore) -> None:
    run_id = new_run(store)
    statuses = ["finished", "failed", "error", "cancelled"] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda s: store.end_run(run_id, s) is not None, statuses))
    assert results.count(True) == 1
    winner = statuses[results.index(True)]
    assert store.get_run(run_id).status == winner


def test_the_last_node_and_the_run_end_in_one_update_once(store: RunStore) -> None:
    run_id = new_run(store, nodes=("a",))
    assert store.start_node(run_id, "a", NodeStart(1)) is not None
    state = node_state(status="finished", output={"n": 1}, attempts=1)
    ended = store.end_last_node(run_id, "a", state, "finished", results={"a": {"n": 1}})
    assert ended == {"_id": run_id, "status": "finished", "workflow": "W", "parent_run_id": None,
                     "parent_node_id": None, "trigger": {"type": "api"}}  # fmt: skip
    run = store.get_run(run_id)
    assert run.finished_at is not None
    assert run.nodes["a"].output == {"n": 1} and run.results == {"a": {"n": 1}}
    assert store.end_last_node(run_id, "a", state, "failed", error="a redelivery") is None
    assert store.get_run(run_id).status == "finished"


def test_the_last_node_of_a_cancelled_run_cannot_end_it(store: RunStore) -> None:
    run_id = new_run(store, nodes=("a",))
    assert store.start_node(run_id, "a", NodeStart(1)) is not None
    assert store.end_run(run_id, "cancelled") is not None
    state = node_state(status="finished", output=1, attempts=1)
    assert store.end_last_node(run_id, "a", state, "finished") is None
    assert store.get_run(run_id).status == "cancelled"


def test_an_ended_run_cannot_move_back(store: RunStore) -> None:
    run_id = new_run(store)
    assert store.end_run(run_id, "finished", results={"ok": True}) is not None
    assert store.end_run(run_id, "failed", error="late") is None
    assert store.start_node(run_id, "a", NodeStart(1)) is None
    run = store.get_run(run_id)
    assert run.status == "finished" and run.results == {"ok": True} and isinstance(run.finished_at, datetime)


def test_only_one_racing_end_of_a_node_is_recorded(store: RunStore) -> None:
    run_id = new_run(store)
    assert store.start_node(run_id, "a", NodeStart(1)) is not None
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: store.end_node(run_id, "a", {"status": "finished", "output": i}), range(16))
        )
    assert results.count(True) == 1
    assert store.get_run(run_id).nodes["a"].output == results.index(True)


def test_a_finished_node_cannot_be_started_again(store: RunStore) -> None:
    run_id = new_run(store)
    assert store.start_node(run_id, "a", NodeStart(1)) is not None
    assert store.end_node(run_id, "a", {"status": "finished", "output": 1})
    assert store.start_node(run_id, "a", NodeStart(1)) is None


def test_first_node_start_sets_the_run_running_with_a_start_time(store: RunStore) -> None:
    run_id = new_run(store)
    before = store.start_node(run_id, "a", NodeStart(1))
    assert before is not None and before["status"] == "pending"
    run = store.get_run(run_id)
    assert run.status == "running" and isinstance(run.started_at, datetime)
    assert isinstance(run.nodes["a"].started_at, datetime)


def test_the_only_source_starts_the_run_in_one_update_and_a_redelivery_keeps_its_time(
    store: RunStore,
) -> None:
    run_id = new_run(store)
    before = store.start_node(run_id, "a", NodeStart(1), first=True)
    assert before is not None and before["status"] == "pending"
    started = store.get_run(run_id).started_at
    assert store.get_run(run_id).status == "running" and isinstance(started, datetime)
    again = store.start_node(run_id, "a", NodeStart(2), first=True)  # a redelivery, the run already running
    assert again is not None and again["status"] == "running"
    assert store.get_run(run_id).started_at == started


def test_a_pure_nodes_end_is_also_the_start_of_a_pending_run(store: RunStore) -> None:
    run_id = new_run(store)
    state = node_state(status="finished", output=1, attempts=1)
    assert store.end_node(run_id, "a", state, run_was="pending")
    run = store.get_run(run_id)
    assert run.status == "running" and isinstance(run.started_at, datetime)
    assert run.nodes["a"].status == "finished" and run.nodes["a"].output == 1


def test_a_pure_node_whose_run_started_meanwhile_still_records_its_end(store: RunStore) -> None:
    run_id = new_run(store)
    assert store.start_node(run_id, "b", NodeStart(1)) is not None  # another source started the run
    started = store.get_run(run_id).started_at
    assert store.end_node(run_id, "a", node_state(status="finished", output=1), run_was="pending")
    run = store.get_run(run_id)
    assert run.nodes["a"].status == "finished" and run.started_at == started


def test_a_pure_node_records_nothing_in_a_cancelled_run_and_ends_once(store: RunStore) -> None:
    cancelled = new_run(store)
    store.cancel_run(cancelled)
    assert not store.end_node(cancelled, "a", node_state(status="finished"), run_was="running")
    assert store.get_run(cancelled).nodes["a"].status == "pending"

    run_id = new_run(store)
    assert store.end_node(run_id, "a", node_state(status="finished", output=1), run_was="pending")
    assert not store.end_node(run_id, "a", node_state(status="finished", output=2), run_was="running")
    assert store.get_run(run_id).nodes["a"].output == 1


def test_a_pure_last_node_starts_and_ends_a_pending_run_in_one_update(store: RunStore) -> None:
    run_id = new_run(store, nodes=("a",))
    state = node_state(status="finished", output=1, attempts=1)
    ended = store.end_last_node(run_id, "a", state, "finished", results=1, run_was="pending")
    assert ended is not None and ended["status"] == "finished"
    run = store.get_run(run_id)
    assert run.started_at is not None and run.finished_at is not None and run.started_at <= run.finished_at


def test_output_that_would_pass_the_size_limit_is_refused(store: RunStore) -> None:
    small = RunStore(store.db, max_run_doc_bytes=16 * 1024)
    run_id = new_run(small)
    small.start_node(run_id, "a", NodeStart(1))
    with pytest.raises(DocumentTooLarge, match="node 'a' output"):
        small.end_node(run_id, "a", {"status": "finished", "output": "x" * 20000}, doc_size=500)


def test_a_wait_record_past_the_budget_is_refused(store: RunStore) -> None:
    small = RunStore(store.db, max_run_doc_bytes=16 * 1024)
    with pytest.raises(
        DocumentTooLarge, match="node 'a' would wait with a record of 20 KiB, past the 16 KiB"
    ):
        small.wait_records.check_size("a", {"data": {"x": "x" * 20000}})
    small.wait_records.check_size("a", {"data": {}})


def test_wait_records_live_out_of_the_run_and_pass_their_token_once(store: RunStore) -> None:
    run_id = new_run(store)
    store.start_node(run_id, "a", NodeStart(1))
    waiting = node_state(status="waiting", attempts=1, finished_at=None)
    assert store.set_waiting(
        run_id, "a", waiting, {"run_id": "child", "token": "t1", "woken": False, "epoch": 0}
    )
    assert "waits" not in store.get_run_document(run_id)
    records = store.wait_records
    assert records.pass_token(run_id, "a", "t1", "t2", 0.0)
    assert not records.pass_token(run_id, "a", "t1", "t3", 0.0)  # a superseded message
    assert not_none(records.get(run_id, "a"))["run_id"] == "child"  # the run awaited, kept as given
    assert records.take_token(run_id, "a", "w1") is not None
    assert records.take_token(run_id, "a", "w2") is None  # a wake-up is in flight
    assert list(store.overdue_waits(1.0)) == [(run_id, "a")]
    store.set_node_state(run_id, "a", node_state(status="finished"), ["waiting"])
    assert list(store.overdue_waits(1.0)) == []  # the node no longer waits: its record is closed
    assert not_none(records.get(run_id, "a"))["over"]  # (nx-27017 gives booleans set by $set back as 1)


def test_cancel_cascades_to_active_descendants_only(store: RunStore) -> None:
    # A tree lists runs oldest first (by millisecond): these are a millisecond apart.
    at = [datetime(2026, 1, 1, 0, 0, 0, ms * 1000, tzinfo=UTC) for ms in range(4)]
    root = new_run(store, created_at=at[0])
    child = new_run(
        store, parent_run_id=root, parent_node_id="a", root_run_id=root, depth=1, created_at=at[1]
    )
    done_child = new_run(
        store, parent_run_id=root, parent_node_id="b", root_run_id=root, depth=1, created_at=at[2]
    )
    grandchild = new_run(
        store, parent_run_id=child, parent_node_id="a", root_run_id=root, depth=2, created_at=at[3]
    )
    store.end_run(done_child, "finished")
    assert sorted(store.cancel_run(root)) == sorted([root, child, grandchild])
    assert store.get_run(done_child).status == "finished"
    tree = store.run_tree(root)
    assert [c.id for c in tree.children] == [child, done_child]
    assert [g.id for g in tree.children[0].children] == [grandchild]


def test_missing_run_and_workflow_raise_clear_errors(store: RunStore) -> None:
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        store.get_run("nope")
    with pytest.raises(WorkflowNotFound, match="no workflow named 'Ghost'"):
        store.get_workflow("Ghost")


def test_runs_are_listed_newest_first_with_filters(store: RunStore) -> None:
    first, second, third = (
        new_run(store, created_at=datetime(2026, 1, day, tzinfo=UTC)) for day in (1, 2, 3)
    )
    store.end_run(second, "failed", error="x")
    assert [r.id for r in store.list_runs()] == [third, second, first]
    assert [r.id for r in store.list_runs(status="failed")] == [second]
    assert [r.id for r in store.list_runs(limit=1)] == [third]


def test_the_history_indexes_exist_after_start_up(store: RunStore) -> None:
    from orchestrator.store.history import INDEXES

    store.ensure_indexes()
    # nx-27017 names indexes its own way and holds no `_id` in them: compare the other fields.
    made = {
        tuple(f for f, _ in index["key"] if f != "_id") for index in store.runs.index_information().values()
    }
    assert {tuple(f for f, _ in keys if f != "_id") for keys in INDEXES.values()} <= made
