"""parameter_loop on real workers: order, modes, the cap, errors, and a sweep of child runs."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.constants import WAIT_ITEMS
from orchestrator.errors import WorkflowValidationError
from orchestrator.store.models import Run
from orchestrator.store.wait_records import ITEMS_PER_CHUNK
from tests.conftest import as_list, not_none, wait_for, workflow
from workers.parameter_loop import ParameterLoopParams

pytestmark = pytest.mark.usefixtures("worker")


def loop_node(values: Any, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"id": "loop", "type": "parameter_loop", "params": {"values": values, "body": body, **params}}


def iterations(orch: Orchestrator, run: Run) -> list[Run]:
    return sorted(orch.list_runs(parent=run.id, limit=500), key=lambda r: r.id)


def most_at_once(runs: list[Run]) -> int:
    """The largest number of runs whose [started, finished] intervals all overlap."""
    spans = [(not_none(r.nodes["body"].started_at), not_none(r.nodes["body"].finished_at)) for r in runs]
    assert all(start and end for start, end in spans)
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def test_parallel_loop_outputs_follow_the_order_of_values(orch: Orchestrator) -> None:
    body = {
        "type": "set",
        "params": {"symbol": "{{ loop_value }}", "index": "{{ loop_index }}", "tag": "{{ tag }}"},
    }
    orch.register(
        workflow(
            "Loop", loop_node("{{ symbols }}", body), variables={"symbols": ["BTC", "ETH", "SPY"], "tag": "t"}
        )
    )
    run = orch.run("Loop", timeout=30)
    output: Any = run.nodes["loop"].output
    assert run.status == "finished"
    assert [(e["loop_index"], e["loop_value"], e["status"]) for e in output] == [
        (0, "BTC", "finished"),
        (1, "ETH", "finished"),
        (2, "SPY", "finished"),
    ]
    assert [e["output"] for e in output] == [
        {"symbol": "BTC", "index": 0, "tag": "t"},
        {"symbol": "ETH", "index": 1, "tag": "t"},
        {"symbol": "SPY", "index": 2, "tag": "t"},
    ]
    assert [r.workflow for r in iterations(orch, run)] == ["Loop/loop"] * 3


def test_sequential_loop_runs_one_iteration_at_a_time(orch: Orchestrator) -> None:
    body = {"type": "sleep", "params": {"seconds": 0.2, "output": "{{ loop_value }}"}}
    orch.register(workflow("Loop", loop_node([1, 2, 3], body, mode="sequential", poll_interval_s=30)))
    run = orch.run("Loop", timeout=30)
    assert [e["output"]["output"] for e in as_list(run.nodes["loop"].output)] == [1, 2, 3]
    runs = iterations(orch, run)
    assert most_at_once(runs) == 1
    starts = [not_none(r.nodes["body"].started_at) for r in runs]
    assert starts == sorted(starts)


def test_max_parallel_caps_the_iterations_in_flight(orch: Orchestrator) -> None:
    body = {"type": "sleep", "params": {"seconds": 0.3}}
    orch.register(workflow("Loop", loop_node(list(range(5)), body, max_parallel=1)))
    run = orch.run("Loop", timeout=30)
    assert run.status == "finished" and len(as_list(run.nodes["loop"].output)) == 5
    assert most_at_once(iterations(orch, run)) == 1


def test_a_failed_iteration_is_reported_and_the_others_go_on(orch: Orchestrator) -> None:
    body = {
        "type": "fail",
        "params": {"when": "{{ loop_value == 'bad' }}", "message": "no data for {{ loop_value }}"},
    }
    orch.register(workflow("Loop", loop_node(["a", "bad", "c"], body)))
    run = orch.run("Loop", timeout=30)
    output: Any = run.nodes["loop"].output
    assert run.status == "finished"
    assert [e["status"] for e in output] == ["finished", "failed", "finished"]
    assert "no data for bad" in output[1]["error"]


def test_continue_on_error_false_fails_the_loop_and_starts_no_more(orch: Orchestrator) -> None:
    body = {"type": "fail", "params": {"when": "{{ loop_value == 'bad' }}"}}
    orch.register(
        workflow("Loop", loop_node(["a", "bad", "c", "d"], body, mode="sequential", continue_on_error=False))
    )
    run = orch.run("Loop", timeout=30)
    error = run.nodes["loop"].error or ""
    assert run.status == "failed" and run.nodes["loop"].status == "failed"
    assert "iteration 1 (loop_value 'bad') failed" in error and "2 iteration(s) were not started" in error
    assert len(iterations(orch, run)) == 2


def test_bad_body_params_fail_the_loop_before_any_iteration_starts(orch: Orchestrator) -> None:
    body = {"type": "sleep", "params": {"seconds": "{{ loop_value }}"}}
    orch.register(workflow("Loop", loop_node([0.1, "soon"], body)))
    run = orch.run("Loop", timeout=30)
    error = run.nodes["loop"].error or ""
    assert run.status == "failed"
    assert "node 'loop', parameter 'body': iteration 1 (loop_value 'soon'): parameter 'seconds'" in error
    assert iterations(orch, run) == []


def test_unknown_body_type_is_named_at_registration(orch: Orchestrator) -> None:
    with pytest.raises(
        WorkflowValidationError, match=r"field 'params\.body\.type': unknown node type 'teleport'"
    ):
        orch.register(workflow("Loop", loop_node([1], {"type": "teleport"})))


def test_a_body_type_given_by_a_template_and_unknown_is_named_at_run_time(orch: Orchestrator) -> None:
    orch.register(workflow("Loop", loop_node([1], {"type": "{{ kind }}"}), variables={"kind": "teleport"}))
    run = orch.run("Loop", timeout=30)
    assert "unknown node type" in (run.nodes["loop"].error or "")


def test_a_sweep_of_child_runs_returns_each_childs_results(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Score",
            {
                "id": "score",
                "type": "set",
                "params": {"symbol": "{{ symbol }}", "score": "{{ symbol | length }}"},
            },
            variables={"symbol": "X"},
            output="{{ nodes.score.output }}",
        )
    )
    body = {
        "type": "run_workflow",
        "params": {"workflow": "Score", "variables": {"symbol": "{{ loop_value }}"}},
    }
    orch.register(workflow("Sweep", loop_node(["BTC", "DOGE", "SOL"], body, max_parallel=2)))
    run = orch.run("Sweep", timeout=60)
    output: Any = run.nodes["loop"].output
    assert [e["output"]["targetResults"] for e in output] == [
        {"symbol": "BTC", "score": 3},
        {"symbol": "DOGE", "score": 4},
        {"symbol": "SOL", "score": 3},
    ]
    tree = orch.run_tree(run.id)
    assert [len(iteration.children) for iteration in tree.children] == [1, 1, 1]
    assert {c.children[0].depth for c in tree.children} == {2}


def test_empty_values_finish_at_once(orch: Orchestrator) -> None:
    orch.register(workflow("Loop", loop_node([], {"type": "set"})))
    assert orch.run("Loop", timeout=30).nodes["loop"].output == []


def test_summary_output_counts_iterations_and_names_the_failures(orch: Orchestrator) -> None:
    body = {
        "type": "fail",
        "params": {"when": "{{ loop_value % 10 == 3 }}", "message": "bad {{ loop_value }}"},
    }
    orch.register(workflow("Loop", loop_node(list(range(25)), body, output="summary", max_parallel=10)))
    run = orch.run("Loop", timeout=60)
    output: Any = run.nodes["loop"].output
    assert run.status == "finished"
    assert {k: output[k] for k in ("iterations", "finished", "failed", "timeout", "not_started")} == {
        "iterations": 25,
        "finished": 22,
        "failed": 3,
        "timeout": 0,
        "not_started": 0,
    }
    assert output["by_status"] == {"failed": 3, "finished": 22}
    assert [(f["loop_index"], f["loop_value"], f["status"]) for f in output["failures"]] == [
        (3, 3, "failed"),
        (13, 13, "failed"),
        (23, 23, "failed"),
    ]
    assert "bad 13" in output["failures"][1]["error"]
    assert output["failures"][0]["run_id"] == f"{run.id}.loop.3"
    assert output["run_id_prefix"] == f"{run.id}.loop."
    assert len(iterations(orch, run)) == 25


def test_a_list_output_over_its_limit_is_refused_at_registration_naming_summary(orch: Orchestrator) -> None:
    with pytest.raises(WorkflowValidationError, match=r"2,001 values with `output: list`.*output: summary"):
        orch.register(workflow("Loop", loop_node(list(range(2001)), {"type": "set"})))
    orch.register(workflow("Loop", loop_node(list(range(2001)), {"type": "set"}, output="summary")))


def test_values_from_a_template_over_the_list_limit_fail_the_loop_before_it_starts(
    orch: Orchestrator,
) -> None:
    orch.register(workflow("Loop", loop_node("{{ range(2500) | list }}", {"type": "set"})))
    run = orch.run("Loop", timeout=30)
    assert run.status == "failed" and "2,500 values with `output: list`" in (run.nodes["loop"].error or "")
    assert iterations(orch, run) == []


def test_kept_values_are_read_a_slice_at_a_time_across_chunks(orch: Orchestrator) -> None:
    records = orch.store.wait_records
    values = [{"v": i} for i in range(2 * ITEMS_PER_CHUNK + 5)]
    records.put_items("r1", "loop", values)
    kept = orch.store.db[WAIT_ITEMS].find({"of_run": "r1"}, {"chunk": 1, "items": 1})
    assert sorted((d["chunk"], len(d["items"])) for d in kept) == [
        (0, ITEMS_PER_CHUNK),
        (1, ITEMS_PER_CHUNK),
        (2, 5),
    ]
    for start, stop in [(0, 3), (ITEMS_PER_CHUNK - 2, ITEMS_PER_CHUNK + 2), (0, len(values)), (7, 7)]:
        assert records.items("r1", "loop", start, stop) == values[start:stop]
    with pytest.raises(LookupError, match="node 'other' of run r1 is missing chunks"):
        records.items("r1", "other", 0, 1)


def test_a_capped_loop_starts_its_values_in_order_each_once(orch: Orchestrator) -> None:
    body = {"type": "set", "params": {"v": "{{ loop_value }}"}}
    orch.register(workflow("Loop", loop_node([f"v{i}" for i in range(12)], body, max_parallel=5)))
    run = orch.run("Loop", timeout=60)
    output: Any = run.nodes["loop"].output
    assert run.status == "finished"
    assert [e["output"]["v"] for e in output] == [f"v{i}" for i in range(12)]
    runs = iterations(orch, run)
    assert len(runs) == 12 and most_at_once(runs) <= 5


def test_a_loop_waiting_with_a_record_of_the_earlier_version_goes_on(orch: Orchestrator) -> None:
    """A loop that began waiting before an upgrade (its record holding the params, values
    included, and no values kept beside it) resumes: the record is upgraded once."""
    body = {"type": "sleep", "params": {"seconds": 0.4, "output": "{{ loop_value }}"}}
    params = {"values": [1, 2, 3], "body": body, "mode": "sequential", "poll_interval_s": 0.2}
    orch.register(workflow("Loop", {"id": "loop", "type": "parameter_loop", "params": params}))
    run_id = orch.trigger("Loop")
    record = wait_for(lambda: orch.store.wait_records.get(run_id, "loop"), timeout=30)
    legacy = {"params": ParameterLoopParams.model_validate(params).model_dump(mode="json")}
    orch.store.wait_records.set_data(run_id, "loop", legacy)
    orch.store.db[WAIT_ITEMS].delete_many({"of_run": run_id})
    assert record["data"].keys() == {"plan"}
    run = orch.wait(run_id, timeout=60)
    assert [e["output"]["output"] for e in as_list(run.nodes["loop"].output)] == [1, 2, 3]
    upgraded = not_none(orch.store.wait_records.get(run_id, "loop"))
    assert upgraded["data"]["plan"]["count"] == 3
