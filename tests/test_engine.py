"""Runs on a real prefork worker: shapes, lifecycle, retries, timeouts, limits, redelivery."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.engine.launcher import prepare_run
from orchestrator.store.handoff import snapshot_after
from orchestrator.store.models import Run
from tests.conftest import as_dict, not_none, wait_for, workflow

pytestmark = pytest.mark.usefixtures("worker")


def run(
    orch: Orchestrator, spec: dict[str, Any], variables: dict[str, Any] | None = None, timeout: float = 30
) -> Run:
    orch.register(spec)
    return orch.run(spec["name"], variables, timeout=timeout)


def test_chain_runs_nodes_in_order_and_passes_outputs(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Chain",
            {"id": "a", "type": "set", "params": {"n": "{{ start }}"}},
            {"id": "b", "type": "set", "after": ["a"], "params": {"n": "{{ nodes.a.output.n + 1 }}"}},
            {"id": "c", "type": "set", "after": ["b"], "params": {"n": "{{ nodes.b.output.n * 10 }}"}},
            variables={"start": 1},
        ),
    )
    assert result.status == "finished"
    assert result.results == {"c": {"n": 20}}
    a, b, c = (result.nodes[n] for n in "abc")
    assert a.finished_at is not None and b.started_at is not None and a.finished_at <= b.started_at
    assert b.finished_at is not None and c.started_at is not None and b.finished_at <= c.started_at
    assert (
        result.started_at is not None and result.finished_at is not None and result.trigger == {"type": "api"}
    )


def worker_idle(orch: Orchestrator) -> bool:
    """Whether the shared worker runs nothing (a test before may have left a node running)."""
    active = orch.app.control.inspect(timeout=1).active() or {}
    return bool(active) and not any(active.values())


def test_group_branches_run_in_parallel(orch: Orchestrator) -> None:
    # Both branches need a free process each: start once the worker's two are free.
    wait_for(lambda: worker_idle(orch), timeout=60, what="the shared worker to be idle")
    result = run(
        orch,
        workflow(
            "Fan Out",
            {"id": "left", "type": "sleep", "params": {"seconds": 1}},
            {"id": "right", "type": "sleep", "params": {"seconds": 1}},
        ),
    )
    assert result.status == "finished"
    left, right = result.nodes["left"], result.nodes["right"]
    assert left.started_at and right.finished_at and right.started_at and left.finished_at
    assert left.started_at < right.finished_at and right.started_at < left.finished_at  # they overlapped


def test_chord_fan_in_waits_for_every_branch(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Fan In",
            {"id": "start", "type": "set", "params": {"x": 1}},
            {"id": "slow", "type": "sleep", "after": ["start"], "params": {"seconds": 0.5, "output": 2}},
            {"id": "fast", "type": "set", "after": ["start"], "params": {"v": 3}},
            {
                "id": "total",
                "type": "set",
                "after": ["slow", "fast"],
                "params": {"sum": "{{ nodes.slow.output.output + nodes.fast.output.v }}"},
            },
            output="{{ nodes.total.output.sum }}",
        ),
    )
    assert result.status == "finished" and result.results == 5
    assert not_none(result.nodes["slow"].finished_at) <= not_none(result.nodes["total"].started_at)


def test_non_series_parallel_graph_runs_every_node_once(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "N Shape",
            {"id": "a", "type": "count", "params": {"key": "n-a"}},
            {"id": "b", "type": "count", "params": {"key": "n-b"}},
            {"id": "c", "type": "count", "after": ["a"], "params": {"key": "n-c"}},
            {"id": "d", "type": "count", "after": ["a", "b"], "params": {"key": "n-d"}},
        ),
    )
    assert result.status == "finished"
    assert {n: s.output for n, s in result.nodes.items()} == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_failed_node_fails_the_run_and_skips_downstream(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Broken",
            {"id": "ok", "type": "set", "params": {"x": 1}},
            {"id": "boom", "type": "fail", "after": ["ok"], "params": {"message": "exchange is down"}},
            {"id": "after_boom", "type": "set", "after": ["boom"]},
            {"id": "later", "type": "set", "after": ["after_boom"]},
            {"id": "side", "type": "set", "after": ["ok"], "params": {"y": 2}},
        ),
    )
    assert result.status == "failed"
    assert "node 'boom' failed" in (result.error or "") and "exchange is down" in (result.error or "")
    assert result.nodes["boom"].status == "failed"
    assert "RuntimeError: exchange is down" in (result.nodes["boom"].error or "")
    assert "Traceback" in (result.nodes["boom"].traceback or "")
    assert result.nodes["after_boom"].status == "skipped" and result.nodes["later"].status == "skipped"
    assert result.nodes["side"].status == "finished"  # independent branches still run


def test_undefined_template_name_fails_the_node_saying_where(orch: Orchestrator) -> None:
    result = run(
        orch, workflow("Typo", {"id": "fetch", "type": "set", "params": {"interval": "{{ timefrme }}"}})
    )
    assert result.status == "failed"
    assert (
        result.nodes["fetch"].error
        == "node 'fetch', parameter 'interval': undefined name 'timefrme' in template '{{ timefrme }}'"
    )


def test_invalid_params_fail_the_node_naming_the_parameter(orch: Orchestrator) -> None:
    result = run(
        orch, workflow("Bad Param", {"id": "nap", "type": "sleep", "params": {"seconds": "{{ -1 }}"}})
    )
    assert result.status == "failed"
    assert "node 'nap' (sleep): parameter 'seconds'" in (result.nodes["nap"].error or "")


def test_output_that_cannot_be_evaluated_is_a_run_error(orch: Orchestrator) -> None:
    result = run(
        orch, workflow("Bad Output", {"id": "a", "type": "set"}, output="{{ nodes.a.output.missing }}")
    )
    assert result.status == "error" and "workflow output" in (result.error or "")


def test_output_that_is_not_json_fails_the_node(orch: Orchestrator) -> None:
    result = run(orch, workflow("Not JSON", {"id": "odd", "type": "not_json"}))
    assert result.status == "failed" and "not JSON" in (result.nodes["odd"].error or "")


def test_retry_runs_the_node_again_until_it_succeeds(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Retry",
            {
                "id": "shaky",
                "type": "flaky",
                "params": {"succeed_on": 3},
                "retry": {"max_attempts": 3, "backoff_s": 0.1},
            },
            {"id": "next", "type": "count", "after": ["shaky"], "params": {"key": "retry-next"}},
        ),
    )
    assert result.status == "finished"
    assert result.nodes["shaky"].output == {"attempt": 3} and result.nodes["shaky"].attempts == 3
    assert result.nodes["next"].output == 1  # the rest of the chain ran once


def test_retry_gives_up_after_max_attempts(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Retry Out",
            {
                "id": "shaky",
                "type": "flaky",
                "params": {"succeed_on": 5},
                "retry": {"max_attempts": 2, "backoff_s": 0.05},
            },
        ),
    )
    assert result.status == "failed"
    assert result.nodes["shaky"].attempts == 2 and "attempt 2 fails" in (result.nodes["shaky"].error or "")


def test_node_past_its_timeout_fails(orch: Orchestrator) -> None:
    result = run(
        orch, workflow("Slow", {"id": "nap", "type": "sleep", "params": {"seconds": 30}, "timeout_s": 0.5})
    )
    assert result.status == "failed", result.error
    assert "timed out" in (result.nodes["nap"].error or "")
    assert result.nodes["nap"].duration_s is not None and result.nodes["nap"].duration_s < 10


def test_time_limit_stops_a_node_that_ignores_its_deadline(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow("Blocking", {"id": "stuck", "type": "block", "params": {"seconds": 30}, "timeout_s": 1}),
    )
    assert result.status == "failed"
    assert result.nodes["stuck"].error == "node 'stuck' timed out after 1 s (timeout_s)"


def test_output_past_the_document_limit_fails_the_node_clearly(orch: Orchestrator) -> None:
    result = run(orch, workflow("Too Big", {"id": "huge", "type": "big", "params": {"kib": 2048}}))
    assert result.status == "failed"
    error = result.nodes["huge"].error or ""
    assert "ORCH_MAX_RUN_DOC_BYTES" in error and "pass an identifier" in error


def test_a_redelivered_node_message_does_not_run_the_node_again(orch: Orchestrator) -> None:
    result = run(orch, workflow("Once", {"id": "c", "type": "count", "params": {"key": "once"}}))
    assert result.status == "finished" and result.nodes["c"].output == 1
    # deliver the same node message again, as Redis would after a lost ack
    node = {"id": "c", "type": "count", "params": {"key": "once"}}
    orch.app.signature("workers.count", kwargs={"run_id": result.id, "node": node}).apply_async()
    orch.app.signature("orchestrator.finalize_run", kwargs={"run_id": result.id}).apply_async()
    marker = run(orch, workflow("Marker", {"id": "m", "type": "set"}))  # the worker has drained its queue
    assert marker.status == "finished"
    assert not_none(orch.store.db["test_counts"].find_one({"_id": "once"}))["n"] == 1
    assert orch.get_run(result.id).status == "finished"


def test_cancelled_run_starts_no_more_nodes(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Cancel Me",
            {"id": "first", "type": "sleep", "params": {"seconds": 1}},
            {"id": "second", "type": "count", "after": ["first"], "params": {"key": "cancelled-second"}},
        )
    )
    run_id = orch.trigger("Cancel Me")
    wait_for(lambda: orch.get_run(run_id).nodes["first"].status == "running", what="first node running")
    assert orch.cancel(run_id) == [run_id]
    marker = run(orch, workflow("Marker", {"id": "m", "type": "sleep", "params": {"seconds": 1.2}}))
    assert marker.status == "finished"
    cancelled = orch.get_run(run_id)
    assert cancelled.status == "cancelled" and cancelled.nodes["second"].status == "pending"
    assert orch.store.db["test_counts"].find_one({"_id": "cancelled-second"}) is None


def test_a_last_node_running_when_its_run_is_cancelled_is_stopped_and_the_run_stays_cancelled(
    orch: Orchestrator,
) -> None:
    orch.register(workflow("Cancel Last", {"id": "only", "type": "sleep", "params": {"seconds": 3}}))
    run_id = orch.trigger("Cancel Last")
    wait_for(lambda: orch.get_run(run_id).nodes["only"].status == "running", what="the node running")
    assert orch.cancel(run_id) == [run_id]
    marker = run(orch, workflow("Marker", {"id": "m", "type": "set"}))  # the worker took new work
    assert marker.status == "finished"
    cancelled = orch.get_run(run_id)
    assert cancelled.status == "cancelled" and cancelled.results is None
    assert cancelled.nodes["only"].status == "cancelled"


def test_run_document_follows_the_contract(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Doc", {"id": "a", "type": "set", "params": {"s": "{{ symbol }}"}}, variables={"symbol": "BTC"}
        ),
        {"symbol": "ETH"},
    )
    doc = orch.store.get_run_document(result.id)
    for field in (
        "_id",
        "workflow",
        "status",
        "variables",
        "trigger",
        "parent_run_id",
        "parent_node_id",
        "root_run_id",
        "depth",
        "nodes",
        "results",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    ):
        assert field in doc, field
    assert doc["variables"] == {"symbol": "ETH"} and doc["depth"] == 0 and doc["root_run_id"] == result.id
    assert set(doc["nodes"]["a"]) >= {"status", "output", "error", "attempts", "started_at", "finished_at"}
    assert result.created_at <= not_none(result.started_at) <= not_none(result.finished_at)


# -- pure nodes: recorded once at their end, handed the run document by the node before ------


def test_a_pure_node_runs_from_the_document_the_node_before_it_handed_on(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Hand On",
            {"id": "first", "type": "peek"},
            {"id": "a", "type": "set", "after": ["first"], "params": {"n": 1}},
            {"id": "b", "type": "peek", "after": ["a"]},
            {"id": "c", "type": "sleep", "after": ["b"], "params": {"seconds": 0}},
            {"id": "d", "type": "peek", "after": ["c"]},
            {"id": "e", "type": "set", "after": ["d"], "params": {"n": "{{ nodes.a.output.n + 1 }}"}},
        ),
    )
    assert result.status == "finished" and result.results == {"e": {"n": 2}}
    # the first node runs from the document its launch hands it: no node reads
    assert result.nodes["first"].output == {"handed_on": True, "saw": []}
    assert result.nodes["b"].output == {"handed_on": True, "saw": ["a", "first"]}
    assert result.nodes["d"].output == {"handed_on": True, "saw": ["a", "b", "c", "first"]}
    for state in result.nodes.values():
        assert state.status == "finished" and state.started_at is not None and state.finished_at is not None
    assert result.started_at is not None and result.started_at <= not_none(result.nodes["a"].started_at)


def test_a_node_with_effects_handed_the_document_is_still_seen_running(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Hand On Effects",
            {"id": "a", "type": "set", "params": {"n": 1}},
            {"id": "b", "type": "peek_running", "after": ["a"]},
            {"id": "c", "type": "peek_running", "after": ["b"]},
        ),
    )
    assert result.status == "finished"
    assert result.nodes["b"].output == {"handed_on": True, "saw": ["a"], "own_status": "running"}
    assert result.nodes["c"].output == {"handed_on": True, "saw": ["a", "b"], "own_status": "running"}
    assert result.nodes["c"].attempts == 1


@pytest.mark.parametrize("kind", ["peek", "peek_running"])
@pytest.mark.parametrize("sources", [1, 3])
def test_the_nodes_a_run_starts_with_run_from_the_document_its_launch_hands_them(
    orch: Orchestrator, kind: str, sources: int
) -> None:
    firsts = [{"id": f"s{i}", "type": kind} for i in range(sources)]
    result = run(
        orch,
        workflow(
            f"Launch Hands {kind} {sources}",
            *firsts,
            {"id": "last", "type": "set", "after": [f["id"] for f in firsts], "params": {"n": 1}},
        ),
    )
    assert result.status == "finished"
    for first in firsts:
        output = as_dict(result.nodes[first["id"]].output)
        assert output["handed_on"] is True and output["saw"] == []
        if kind == "peek_running":  # not pure: still marked running, without reading first
            assert output["own_status"] == "running"
    # the run's start is stamped by whichever first node started it, before the last began
    assert not_none(result.started_at) <= not_none(result.nodes["last"].started_at)


def counted(orch: Orchestrator, key: str) -> int:
    doc = orch.store.db["test_counts"].find_one({"_id": key})
    return int(doc["n"]) if doc else 0


def test_an_effect_deferred_to_the_end_follows_the_recorded_end_once(orch: Orchestrator) -> None:
    result = run(orch, workflow("Outbox", {"id": "o", "type": "outbox", "params": {"key": "outbox-once"}}))
    assert result.status == "finished" and result.nodes["o"].output == ""
    wait_for(lambda: counted(orch, "outbox-once:sent") == 1, what="the effect")
    assert counted(orch, "outbox-once:dropped") == 0


def test_an_effect_whose_output_is_not_recorded_is_dropped(orch: Orchestrator) -> None:
    too_big = orch.app.settings.max_run_doc_bytes // 1024 + 1
    node = {"id": "o", "type": "outbox", "params": {"key": "outbox-big", "kib": too_big}}
    result = run(orch, workflow("Outbox Too Big", node))
    assert result.status == "failed" and "ORCH_MAX_RUN_DOC_BYTES" in (result.nodes["o"].error or "")
    assert (counted(orch, "outbox-big:sent"), counted(orch, "outbox-big:dropped")) == (0, 1)


def test_an_effect_of_a_node_whose_run_was_cancelled_first_is_dropped(orch: Orchestrator) -> None:
    node = {"id": "o", "type": "outbox", "params": {"key": "outbox-cx"}}
    spec = orch.register(workflow("Outbox Cancelled", node))
    run_id, canvas = prepare_run(orch.app, spec)  # the node runs from its launch's document
    assert canvas is not None and orch.cancel(run_id) == [run_id]
    canvas.apply_async()
    wait_for(lambda: counted(orch, "outbox-cx:dropped") == 1, what="the effect dropped")
    assert counted(orch, "outbox-cx:sent") == 0 and orch.get_run(run_id).nodes["o"].status == "pending"


def test_a_pure_node_with_retries_whose_run_was_cancelled_first_is_left_alone(orch: Orchestrator) -> None:
    node = {"id": "p", "type": "set", "params": {"n": 1}, "retry": {"max_attempts": 3, "backoff_s": 0.1}}
    spec = orch.register(workflow("Pure Cancelled", node))
    run_id, canvas = prepare_run(orch.app, spec)  # the node runs from its launch's document
    assert canvas is not None and orch.cancel(run_id) == [run_id]
    canvas.apply_async()
    orch.register(workflow("Marker", {"id": "m", "type": "sleep", "params": {"seconds": 0.5}}))
    orch.run("Marker", timeout=30)  # the worker took the node's message meanwhile
    state = orch.get_run(run_id).nodes["p"]
    assert (state.status, state.attempts) == ("pending", 0)  # not retried as if it had failed


def test_the_nodes_of_a_fan_out_run_from_the_states_the_node_before_handed_on(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Fan Hand On",
            {"id": "root", "type": "set", "params": {"n": 1}},
            {"id": "p1", "type": "peek", "after": ["root"]},
            {"id": "p2", "type": "peek_running", "after": ["root"]},
            {"id": "end", "type": "set", "after": ["p1", "p2"], "params": {"n": "{{ nodes.root.output.n }}"}},
        ),
    )
    assert result.status == "finished" and result.results == {"end": {"n": 1}}
    assert result.nodes["p1"].output == {"handed_on": True, "saw": ["root"]}
    assert result.nodes["p2"].output == {"handed_on": True, "saw": ["root"], "own_status": "running"}


def test_a_pure_node_after_parallel_work_reads_the_document(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Fan In Pure",
            {"id": "left", "type": "set", "params": {"side": "left"}},
            {"id": "right", "type": "set", "params": {"side": "right"}},
            {"id": "both", "type": "peek", "after": ["left", "right"]},
        ),
    )
    assert result.status == "finished"
    assert result.nodes["both"].output == {"handed_on": False, "saw": ["left", "right"]}


def test_a_pure_node_that_fails_retries_and_the_chain_goes_on_once(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Pure Retry",
            {"id": "a", "type": "set", "params": {"n": 1}},
            {
                "id": "shaky",
                "type": "pure_flaky",
                "after": ["a"],
                "params": {"succeed_on": 2},
                "retry": {"max_attempts": 3, "backoff_s": 0.1},
            },
            {"id": "next", "type": "count", "after": ["shaky"], "params": {"key": "pure-retry-next"}},
        ),
    )
    assert result.status == "finished"
    assert result.nodes["shaky"].output == {"attempt": 2} and result.nodes["shaky"].attempts == 2
    assert result.nodes["next"].output == 1


def test_a_cancelled_run_records_no_pure_node_after_the_one_running(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Cancel Pure",
            {"id": "first", "type": "sleep", "params": {"seconds": 1}},
            {"id": "second", "type": "set", "after": ["first"], "params": {"n": 2}},
            {"id": "third", "type": "set", "after": ["second"], "params": {"n": 3}},
        )
    )
    run_id = orch.trigger("Cancel Pure")
    wait_for(lambda: orch.get_run(run_id).nodes["first"].status == "running", what="first node running")
    assert orch.cancel(run_id) == [run_id]
    assert orch.get_run(run_id).nodes["first"].status == "cancelled"  # stopped where it ran
    marker = run(orch, workflow("Marker", {"id": "m", "type": "set"}))  # the worker has drained its queue
    assert marker.status == "finished"
    cancelled = orch.get_run(run_id)
    assert cancelled.status == "cancelled"
    assert cancelled.nodes["second"].status == "pending" and cancelled.nodes["third"].status == "pending"


def test_a_redelivered_pure_node_message_with_a_stale_document_changes_nothing(orch: Orchestrator) -> None:
    spec = workflow(
        "Pure Once",
        {"id": "a", "type": "set", "params": {"n": 1}},
        {"id": "b", "type": "set", "after": ["a"], "params": {"n": "{{ nodes.a.output.n + 1 }}"}},
    )
    result = run(orch, spec)
    assert result.status == "finished" and result.nodes["b"].output == {"n": 2}
    # b's message again, carrying the document as a handed it on (b still pending in it)
    doc = orch.store.get_run_document(result.id)
    stale = snapshot_after(doc | {"status": "running", "nodes": {**doc["nodes"], "b": {"status": "pending"}}},
                           "a", doc["nodes"]["a"])  # fmt: skip
    node = {"id": "b", "type": "set", "after": ["a"], "params": {"n": 99}}
    orch.app.signature("workers.set", args=(stale,), kwargs={"run_id": result.id, "node": node}).apply_async()
    marker = run(orch, workflow("Marker", {"id": "m", "type": "set"}))  # the worker has drained its queue
    assert marker.status == "finished"
    again = orch.get_run(result.id)
    assert (
        again.status == "finished" and again.nodes["b"].output == {"n": 2} and again.results == result.results
    )
