"""The run_workflow node on real workers: fire-and-forget, wait, wake-ups, limits, lineage."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.engine.launcher import Lineage, prepare_run, relaunch_undispatched
from orchestrator.engine.waiting import sweep_waits
from orchestrator.settings import Settings
from orchestrator.store.models import Run
from tests.conftest import WorkerProcess, as_dict, not_none, output_of, wait_for, workflow

pytestmark = pytest.mark.usefixtures("worker")


def child_node(target: str, mode: str = "wait", **params: Any) -> dict[str, Any]:
    return {"id": "child", "type": "run_workflow", "params": {"workflow": target, "mode": mode, **params}}


def register_leaf(orch: Orchestrator, name: str = "Leaf", seconds: float = 0) -> None:
    orch.register(
        workflow(
            name,
            {"id": "work", "type": "sleep", "params": {"seconds": seconds, "output": "{{ symbol }}"}},
            variables={"symbol": "BTC"},
            output="{{ nodes.work.output.output }}",
        )
    )


def test_fire_and_forget_returns_at_once_and_the_child_runs(orch: Orchestrator) -> None:
    register_leaf(orch, seconds=1)
    orch.register(workflow("Parent", child_node("Leaf", "fire_and_forget", variables={"symbol": "ETH"})))
    parent = orch.run("Parent", timeout=30)
    output = parent.nodes["child"].output
    assert parent.status == "finished"
    assert output == {"status": "triggered", "run_id": f"{parent.id}.child", "targetWorkflow": "Leaf"}
    child = orch.get_run(as_dict(output)["run_id"])
    assert child.status in ("pending", "running")  # the parent did not wait
    assert (child.parent_run_id, child.parent_node_id, child.root_run_id, child.depth) == (
        parent.id,
        "child",
        parent.id,
        1,
    )
    assert child.trigger["type"] == "run_workflow" and child.trigger["mode"] == "fire_and_forget"
    assert orch.wait(child.id, timeout=30).results == "ETH"


def test_wait_returns_the_childs_results(orch: Orchestrator) -> None:
    register_leaf(orch, seconds=0.3)
    orch.register(
        workflow(
            "Parent",
            child_node("Leaf", variables={"symbol": "{{ symbol }}"}),
            {
                "id": "use",
                "type": "set",
                "after": ["child"],
                "params": {"got": "{{ nodes.child.output.targetResults }}"},
            },
            variables={"symbol": "SOL"},
        )
    )
    parent = orch.run("Parent", timeout=30)
    output: Any = parent.nodes["child"].output
    assert parent.status == "finished" and parent.nodes["use"].output == {"got": "SOL"}
    assert output["status"] == "finished" and output["targetStatus"] == "finished"
    assert output["targetResults"] == "SOL" and output["targetWorkflow"] == "Leaf"
    assert 0.3 <= output["elapsed_s"] < 5


def test_wake_up_ends_the_wait_long_before_the_next_poll(orch: Orchestrator) -> None:
    register_leaf(orch, seconds=0.5)
    orch.register(workflow("Parent", child_node("Leaf", poll_interval_s=30)))
    parent = orch.run("Parent", timeout=20)
    assert parent.status == "finished"
    assert output_of(parent, "child")["elapsed_s"] < 5


def test_failed_child_is_data_the_parent_branches_on(orch: Orchestrator) -> None:
    orch.register(workflow("Broken", {"id": "boom", "type": "fail", "params": {"message": "no data"}}))
    orch.register(
        workflow(
            "Parent",
            child_node("Broken"),
            {
                "id": "report",
                "type": "set",
                "after": ["child"],
                "params": {"seen": "{{ nodes.child.output.targetStatus }}"},
            },
        )
    )
    parent = orch.run("Parent", timeout=30)
    output: Any = parent.nodes["child"].output
    assert parent.status == "finished" and parent.nodes["child"].status == "finished"
    assert (
        output["status"] == "failed"
        and output["targetStatus"] == "failed"
        and "no data" in output["targetError"]
    )
    assert parent.nodes["report"].output == {"seen": "failed"}


def test_timeout_leaves_the_child_running(orch: Orchestrator) -> None:
    register_leaf(orch, "Slow", seconds=2)
    orch.register(workflow("Parent", child_node("Slow", timeout_s=0.5, poll_interval_s=0.2)))
    parent = orch.run("Parent", timeout=30)
    output: Any = parent.nodes["child"].output
    assert output["status"] == "timeout" and output["targetStatus"] in ("pending", "running")
    assert "goes on" in output["message"]
    assert orch.wait(output["run_id"], timeout=30).status == "finished"


def test_unknown_target_is_an_error_output_naming_it(orch: Orchestrator) -> None:
    orch.register(workflow("Parent", child_node("Nowhere")))
    output: Any = orch.run("Parent", timeout=30).nodes["child"].output
    assert (
        output["targetStatus"] == "error"
        and "'Nowhere'" in output["targetError"]
        and output["run_id"] is None
    )


def test_recursion_stops_at_the_depth_limit(orch: Orchestrator) -> None:
    orch.register(workflow("Loop", child_node("Loop", timeout_s=60)))
    top = orch.run("Loop", timeout=60)
    tree = orch.run_tree(top.id)
    depth, run = 0, tree
    while run.children:
        (run,) = run.children
        depth += 1
    assert depth == orch.settings.max_depth == 8
    deepest: Any = run.nodes["child"].output
    assert deepest["targetStatus"] == "error" and "ORCH_MAX_DEPTH=8" in deepest["targetError"]
    assert top.status == "finished"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"api_key": "x"}, "'api_key' looks like a secret"),
        ({"broker": {"Password": "x"}}, "'broker.Password' looks like a secret"),
        ({"blob": "x" * 70_000}, "pass identifiers"),
    ],
)
def test_child_variables_are_checked(orch: Orchestrator, variables: dict[str, Any], message: str) -> None:
    register_leaf(orch)
    orch.register(workflow("Parent", child_node("Leaf", variables=variables)))
    parent = orch.run("Parent", timeout=30)
    assert parent.status == "failed" and message in (parent.nodes["child"].error or "")
    assert orch.list_runs(parent=parent.id) == []


def test_secret_names_pass_when_the_target_opts_out(orch: Orchestrator) -> None:
    orch.register(workflow("Leaf", {"id": "a", "type": "set"}, allow_secret_variables=True))
    orch.register(workflow("Parent", child_node("Leaf", variables={"token": "t"})))
    assert output_of(orch.run("Parent", timeout=30), "child")["status"] == "finished"


def test_redelivered_parent_node_reuses_its_child(orch: Orchestrator) -> None:
    orch.register(workflow("Leaf", {"id": "c", "type": "count", "params": {"key": "{{ run.id }}"}}))
    orch.register(workflow("Parent", child_node("Leaf", "fire_and_forget")))
    parent = orch.run("Parent", timeout=30)
    child_id = f"{parent.id}.child"
    orch.wait(child_id, timeout=30)
    # the same node message again, as after a worker lost before its ack
    orch.store.runs.update_one(
        {"_id": parent.id}, {"$set": {"status": "running", "nodes.child.status": "running"}}
    )
    node = {"id": "child", "type": "run_workflow", "params": {"workflow": "Leaf", "mode": "fire_and_forget"}}
    orch.app.signature("workers.run_workflow", kwargs={"run_id": parent.id, "node": node}).apply_async()
    wait_for(lambda: orch.get_run(parent.id).nodes["child"].status == "finished", what="redelivered node")
    assert [r.id for r in orch.list_runs(parent=parent.id)] == [child_id]
    assert not_none(orch.store.db["test_counts"].find_one({"_id": child_id}))["n"] == 1


def test_a_fire_and_forget_child_is_sent_once_its_parent_recorded_it(orch: Orchestrator) -> None:
    orch.register(workflow("Leaf", {"id": "see", "type": "parent_node"}))
    orch.register(workflow("Parent", child_node("Leaf", "fire_and_forget")))
    parent = orch.run("Parent", timeout=30)
    child = orch.wait(output_of(parent, "child")["run_id"], timeout=30)
    assert child.status == "finished"
    assert child.nodes["see"].output == "finished"  # the parent's node was recorded before it ran
    assert parent.nodes["child"].attempts == 1 and parent.nodes["child"].started_at is not None


def test_a_parent_cancelled_before_its_fire_and_forget_node_leaves_a_child_that_never_ran(
    orch: Orchestrator,
) -> None:
    orch.register(workflow("Leaf", {"id": "c", "type": "count", "params": {"key": "{{ run.id }}"}}))
    spec = orch.register(workflow("Parent", child_node("Leaf", "fire_and_forget")))
    # The parent is cancelled after its launch, before a worker takes its node's message: the
    # node runs from the document its launch handed it, where the run is still pending.
    parent_id, canvas = prepare_run(orch.app, spec)
    assert canvas is not None and orch.cancel(parent_id) == [parent_id]
    canvas.apply_async()
    child_id = f"{parent_id}.child"
    child = wait_for(
        lambda: (run := orch.store.runs.find_one({"_id": child_id})) and run["status"] == "cancelled" and run,
        what="the child dropped",
    )
    assert "not started" in child["error"] and f"parent run {parent_id} was over" in child["error"]
    assert child["dispatched_at"] is None and child["nodes"]["c"]["status"] == "pending"
    assert orch.get_run(parent_id).nodes["child"].status == "pending"
    assert orch.store.db["test_counts"].find_one({"_id": child_id}) is None  # it never ran


def test_a_child_left_unsent_by_a_lost_worker_is_sent_by_the_sweeper_once(orch: Orchestrator) -> None:
    leaf = orch.register(workflow("Leaf", {"id": "c", "type": "count", "params": {"key": "{{ run.id }}"}}))
    parent_spec = orch.register(workflow("Parent", child_node("Leaf", "fire_and_forget")))
    parent_id, canvas = prepare_run(orch.app, parent_spec)
    child_id = f"{parent_id}.child"
    # A first delivery of the node inserted the child, then its worker died before the send.
    lineage = Lineage(parent_run_id=parent_id, parent_node_id="child", root_run_id=parent_id, depth=1)
    prepare_run(orch.app, leaf, trigger={"type": "run_workflow"}, run_id=child_id, lineage=lineage)
    assert canvas is not None
    canvas.apply_async()  # the redelivery: it finds the child, records itself, sends nothing
    parent = orch.wait(parent_id, timeout=30)
    assert parent.status == "finished" and output_of(parent, "child")["run_id"] == child_id
    child = orch.get_run(child_id)
    assert child.status == "pending" and child.dispatched_at is None
    assert relaunch_undispatched(orch.app, grace_s=0) == [child_id]  # its parent recorded it
    assert orch.wait(child_id, timeout=30).status == "finished"
    assert relaunch_undispatched(orch.app, grace_s=0) == []
    assert not_none(orch.store.db["test_counts"].find_one({"_id": child_id}))["n"] == 1


def test_wake_and_poll_together_continue_the_parent_once(orch: Orchestrator) -> None:
    register_leaf(orch, seconds=0.2)
    orch.register(
        workflow(
            "Parent",
            child_node("Leaf", poll_interval_s=0.05),
            {"id": "next", "type": "count", "after": ["child"], "params": {"key": "continued-{{ run.id }}"}},
        )
    )
    runs = [orch.trigger("Parent") for _ in range(5)]
    finished: list[Run] = [orch.wait(run_id, timeout=60) for run_id in runs]
    for parent in finished:
        # extra wake-ups for a node already claimed must not continue the chain
        wait = not_none(orch.store.wait_records.get(parent.id, "child"))
        orch.app.signature(wait["resend"]).clone(kwargs={"token": "late"}).apply_async()
    marker = orch.register(workflow("Marker", {"id": "m", "type": "sleep", "params": {"seconds": 0.5}}))
    orch.run(marker.name, timeout=30)
    for parent in finished:
        assert parent.status == "finished"
        assert not_none(orch.store.db["test_counts"].find_one({"_id": f"continued-{parent.id}"}))["n"] == 1


def test_run_tree_and_parent_filter_show_lineage(orch: Orchestrator) -> None:
    register_leaf(orch)
    orch.register(workflow("Middle", child_node("Leaf")))
    orch.register(workflow("Top", child_node("Middle")))
    top = orch.run("Top", timeout=30)
    tree = orch.run_tree(top.id)
    (middle,) = tree.children
    (leaf,) = middle.children
    assert (middle.workflow, middle.parent_node_id, leaf.workflow, leaf.depth) == (
        "Middle",
        "child",
        "Leaf",
        2,
    )
    assert leaf.root_run_id == top.id and leaf.status == "finished"
    assert [r.id for r in orch.list_runs(parent=top.id)] == [middle.id]


def test_a_lost_poll_and_wake_up_are_recovered_by_the_sweeper(orch: Orchestrator) -> None:
    register_leaf(orch, seconds=1.5)
    orch.register(workflow("Parent", child_node("Leaf", poll_interval_s=120)))
    parent_id = orch.trigger("Parent")
    wait_for(lambda: orch.get_run(parent_id).nodes["child"].status == "waiting", what="the wait")
    # as if the worker holding the poll message died and the wake-up message was lost
    orch.store.wait_records.waits.update_one(
        {"_id": f"{parent_id}/child"}, {"$set": {"token": "lost", "woken": True, "next_poll_at": 0.0}}
    )
    orch.wait(f"{parent_id}.child", timeout=30)
    assert orch.get_run(parent_id).nodes["child"].status == "waiting"  # nothing else will wake it
    assert sweep_waits(orch.app, grace_s=0) == [f"{parent_id}/child"]
    parent = orch.wait(parent_id, timeout=30)
    assert parent.status == "finished" and output_of(parent, "child")["targetStatus"] == "finished"
    assert sweep_waits(orch.app, grace_s=0) == []


@pytest.fixture
def one_slot(settings: Settings, spare_redis_url: str) -> Iterator[Orchestrator]:
    """An orchestrator whose only worker has a single process, on a broker of its own."""
    own = Settings(
        REDIS_URL=spare_redis_url,
        MONGO_URL=settings.mongo_url,
        ORCH_PLUGINS=settings.plugins,
        ORCH_HOME=settings.home,
    )
    with Orchestrator(settings=own) as orch:
        worker = WorkerProcess(own, orch, "--pool=prefork", "--concurrency=1", name="one-slot").wait_ready()
        try:
            yield orch
        finally:
            worker.stop()


def test_ten_waiting_parents_finish_on_a_single_worker_slot(one_slot: Orchestrator) -> None:
    register_leaf(one_slot, seconds=0.2)
    one_slot.register(workflow("Parent", child_node("Leaf", timeout_s=60, poll_interval_s=0.5)))
    parents = [one_slot.trigger("Parent") for _ in range(10)]
    finished = [one_slot.wait(run_id, timeout=60) for run_id in parents]
    outputs: list[Any] = [run.nodes["child"].output for run in finished]
    assert [o["status"] for o in outputs] == ["finished"] * 10
    # a parent that held the slot while waiting would have left its child no slot to run on
    waits = sorted(
        (not_none(run.nodes["child"].started_at), not_none(run.nodes["child"].finished_at))
        for run in finished
    )
    assert any(later[0] < earlier[1] for earlier, later in pairwise(waits))
