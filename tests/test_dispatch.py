"""A run whose creator stopped between the insert and the send is not left `pending` forever."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kombu.exceptions import OperationalError

from orchestrator import Orchestrator
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.engine.factory import create_app
from orchestrator.engine.launcher import Lineage, launch_run, prepare_run, relaunch_undispatched
from orchestrator.services.embedded import free_port
from orchestrator.settings import Settings
from orchestrator.store.models import utcnow
from tests.conftest import new_run, wait_for, workflow

pytestmark = pytest.mark.usefixtures("worker")


def counted(orch: Orchestrator, name: str, node_id: str = "c") -> WorkflowSpec:
    return orch.register(workflow(name, {"id": node_id, "type": "count", "params": {"key": name}}))


def count(orch: Orchestrator, name: str) -> int:
    doc = orch.store.db["test_counts"].find_one({"_id": name})
    return int(doc["n"]) if doc else 0


def test_a_started_run_records_when_its_canvas_reached_the_broker(orch: Orchestrator) -> None:
    counted(orch, "Sent")
    run = orch.run("Sent", timeout=30)
    assert run.status == "finished"
    assert run.dispatched_at is not None and run.created_at <= run.dispatched_at


def test_the_next_start_with_the_same_id_sends_a_run_that_was_never_sent(orch: Orchestrator) -> None:
    spec = counted(orch, "Lost Send")
    run_id, canvas = prepare_run(orch.app, spec, run_id="lost-send-1")  # ...and the creator stops here
    assert canvas is not None and orch.get_run(run_id).dispatched_at is None
    # while its creator may still be sending it, a second start leaves it alone (two beats, say)
    assert launch_run(orch.app, spec, run_id=run_id) == (run_id, False)

    assert launch_run(orch.app, spec, run_id=run_id, resend_after_s=0) == (run_id, True)
    run = orch.wait(run_id, timeout=30)
    assert run.status == "finished" and run.dispatched_at is not None

    assert launch_run(orch.app, spec, run_id=run_id, resend_after_s=0) == (run_id, False)  # sent: never again
    assert count(orch, "Lost Send") == 1


def test_the_sweeper_sends_a_run_never_sent_once_its_grace_has_passed(orch: Orchestrator) -> None:
    spec = counted(orch, "Swept")
    run_id, _ = prepare_run(orch.app, spec)
    assert relaunch_undispatched(orch.app, grace_s=600) == []  # it may still be on its way
    assert relaunch_undispatched(orch.app, grace_s=0) == [run_id]
    assert orch.wait(run_id, timeout=30).status == "finished"
    assert relaunch_undispatched(orch.app, grace_s=0) == []
    assert count(orch, "Swept") == 1


def test_the_sweeper_ends_as_error_a_run_whose_workflow_went_away(orch: Orchestrator) -> None:
    run_id, _ = prepare_run(orch.app, counted(orch, "Gone"))
    orch.store.delete_workflow("Gone")
    assert relaunch_undispatched(orch.app, grace_s=0) == []
    run = orch.get_run(run_id)
    assert run.status == "error" and "workflow 'Gone' was removed" in (run.error or "")


def test_the_sweeper_ends_as_error_a_run_whose_workflow_has_other_nodes_now(orch: Orchestrator) -> None:
    run_id, _ = prepare_run(orch.app, counted(orch, "Changed", node_id="old"))
    counted(orch, "Changed", node_id="new")
    assert relaunch_undispatched(orch.app, grace_s=0) == []
    run = orch.get_run(run_id)
    assert run.status == "error" and "changed its nodes" in (run.error or "")
    assert count(orch, "Changed") == 0


@pytest.mark.parametrize("parent_status", ["running", "cancelled", "deleted"])
def test_the_sweeper_drops_an_unsent_child_whose_parent_is_over_and_never_recorded_it(
    orch: Orchestrator, parent_status: str
) -> None:
    spec = counted(orch, f"Orphan {parent_status}")
    parent_id = new_run(orch.store, ("n",))
    orch.store.runs.update_one({"_id": parent_id}, {"$set": {"status": "running"}})
    lineage = Lineage(parent_run_id=parent_id, parent_node_id="n", root_run_id=parent_id, depth=1)
    run_id, _ = prepare_run(orch.app, spec, run_id=f"{parent_id}.n", lineage=lineage)
    if parent_status == "cancelled":
        orch.store.runs.update_one({"_id": parent_id}, {"$set": {"status": "cancelled"}})
    elif parent_status == "deleted":
        orch.store.runs.delete_one({"_id": parent_id})
    sent = relaunch_undispatched(orch.app, grace_s=0)
    if parent_status == "running":  # its parent may still record it: it is sent
        assert sent == [run_id] and orch.wait(run_id, timeout=30).status == "finished"
        return
    assert sent == []
    run = orch.get_run(run_id)
    assert run.status == "cancelled" and "not started: its parent run" in (run.error or "")
    assert count(orch, spec.name) == 0


def test_one_caller_only_takes_the_sending_of_an_unsent_run(orch: Orchestrator) -> None:
    run_id, _ = prepare_run(orch.app, counted(orch, "Claimed"))
    assert [orch.store.claim_dispatch(run_id) for _ in range(2)] == [True, False]
    assert relaunch_undispatched(orch.app, grace_s=600) == []


def test_a_claim_whose_holder_stopped_before_sending_is_taken_over_once_it_is_old(
    orch: Orchestrator,
) -> None:
    spec = counted(orch, "Claim Lost")
    # its creator stopped between the insert and the send, ten minutes ago
    new_run(orch.store, ("c",), run_id="claim-lost-1", workflow=spec.name,
            created_at=utcnow() - timedelta(minutes=10))  # fmt: skip
    assert orch.store.claim_dispatch("claim-lost-1")  # ...and so did the sweeper that claimed it
    assert orch.get_run("claim-lost-1").dispatched_at is None  # it does not look sent

    assert relaunch_undispatched(orch.app, grace_s=60) == []  # the claim is recent: its holder may send
    assert launch_run(orch.app, spec, run_id="claim-lost-1", resend_after_s=60) == ("claim-lost-1", False)
    taken = wait_for(lambda: relaunch_undispatched(orch.app, grace_s=0) or None, what="the claim taken over")
    assert taken == ["claim-lost-1"]
    assert orch.wait("claim-lost-1", timeout=30).status == "finished"
    assert relaunch_undispatched(orch.app, grace_s=0) == []
    assert count(orch, "Claim Lost") == 1


def test_a_send_the_broker_refuses_is_left_to_the_sweeper(orch: Orchestrator, settings: Settings) -> None:
    spec = counted(orch, "Refused")
    nowhere = create_app(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    try:
        with pytest.raises(OperationalError):
            launch_run(nowhere, spec, run_id="refused-1")
        assert orch.get_run("refused-1").dispatched_at is None
        assert relaunch_undispatched(nowhere, grace_s=0) == []  # refused again: its claim is given back
        assert orch.get_run("refused-1").dispatched_at is None
    finally:
        nowhere.close()
    assert relaunch_undispatched(orch.app, grace_s=0) == ["refused-1"]
    assert orch.wait("refused-1", timeout=30).status == "finished"
    assert count(orch, "Refused") == 1
