"""The snapshot a node hands on to the next node of its chain: what it holds, its size, its limits."""

from __future__ import annotations

import json

import bson
import pytest
from celery.utils.saferepr import saferepr

from orchestrator import Orchestrator
from orchestrator.constants import HAND_ON_MAX_BYTES
from orchestrator.store.handoff import SIZE_KEY, document_size, snapshot_after, snapshot_of
from orchestrator.store.models import node_state
from orchestrator.store.run_store import RunStore
from tests.conftest import new_run


@pytest.fixture
def store(orch: Orchestrator) -> RunStore:
    return orch.store


def test_the_snapshot_is_the_run_document_without_its_times(store: RunStore) -> None:
    run_id = new_run(store, ("a", "b", "c"), variables={"symbol": "BTC"})
    before = store.get_run_document(run_id)
    state = node_state(status="finished", output={"n": 1}, attempts=1)
    snapshot = snapshot_of(snapshot_after(before, "a", state), run_id)
    assert snapshot is not None
    assert snapshot["_id"] == run_id and snapshot["workflow"] == "W" and snapshot["status"] == "running"
    assert snapshot["variables"] == {"symbol": "BTC"}
    assert (
        snapshot["trigger"] == {"type": "api"}
        and snapshot["depth"] == 0
        and snapshot["root_run_id"] == run_id
    )
    assert not {"created_at", "started_at", "finished_at", "dispatched_at", "waits"} & set(snapshot)
    assert snapshot["nodes"] == {"a": {"status": "finished", "output": {"n": 1}}, "b": {"status": "pending"},
                                 "c": {"status": "pending"}}  # fmt: skip


def test_the_snapshot_counts_the_document_size_as_the_store_has_it(store: RunStore) -> None:
    run_id = new_run(store, ("a", "b", "c"), variables={"symbol": "BTC"})
    doc = store.get_run_document(run_id)
    handed = None
    for node_id, output in (("a", {"n": 1}), ("b", "x" * 3000), ("c", [1, 2, 3])):
        state = node_state(status="finished", output=output, attempts=1)
        before = snapshot_of(handed, run_id) or doc
        assert store.end_node(run_id, node_id, state, run_was="pending" if node_id == "a" else "running")
        handed = snapshot_after(before, node_id, state)
    snapshot = snapshot_of(handed, run_id)
    assert snapshot is not None
    assert snapshot[SIZE_KEY] == len(bson.encode(store.get_run_document(run_id))) == document_size(snapshot)


def test_a_snapshot_past_the_limit_is_not_handed_on(store: RunStore) -> None:
    run_id = new_run(store)
    state = node_state(status="finished", output="x" * HAND_ON_MAX_BYTES, attempts=1)
    assert snapshot_after(store.get_run_document(run_id), "a", state) is None


@pytest.mark.parametrize(
    "previous",
    [
        None,
        42,
        "not json",
        "[1, 2]",
        json.dumps({"_id": "another run", "nodes": {}}),
        json.dumps({"_id": "r"}),
    ],
)
def test_anything_but_a_snapshot_of_this_run_is_not_taken_for_one(previous: object) -> None:
    assert snapshot_of(previous, "r") is None


def test_logs_and_flower_show_the_start_of_a_snapshot_not_the_runs_data(orch: Orchestrator) -> None:
    run_id = new_run(orch.store, variables={"symbol": "BTC"})
    state = node_state(status="finished", output={"price": 123456.789}, attempts=1)
    text = snapshot_after(orch.store.get_run_document(run_id), "a", state)
    shown = saferepr(text, orch.app.tasks["workers.set"].resultrepr_maxsize)  # as the worker logs it
    assert run_id in shown and "BTC" not in shown and "123456" not in shown
