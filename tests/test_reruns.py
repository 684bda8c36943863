"""Re-runs (whole, from the failed nodes, from a node) and workflow removal, through the API
and the command line, on a real worker."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.errors import OrchestratorError, WorkflowNotFound
from tests.conftest import wait_for, workflow

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


def counted(orch: Orchestrator, key: str) -> int:
    doc = orch.store.db["test_counts"].find_one({"_id": key})
    return int(doc["n"]) if doc else 0


def line_with_a_flaky_middle(orch: Orchestrator) -> None:
    """`a` (counts) -> `b` (fails its first execution) -> `c` (counts)."""
    orch.register(
        workflow(
            "Line",
            {"id": "a", "type": "count", "params": {"key": "a"}},
            {"id": "b", "type": "fail_until", "params": {"key": "b", "runs": 1}, "after": ["a"]},
            {"id": "c", "type": "count", "params": {"key": "c"}, "after": ["b"]},
            variables={"day": "2026-12-05"},
            output="{{ nodes.c.output }}",
        )
    )


def test_a_rerun_from_failed_keeps_what_finished_and_runs_the_rest(orch: Orchestrator) -> None:
    line_with_a_flaky_middle(orch)
    first = orch.run("Line", {"day": "2026-12-04"}, timeout=30)
    assert [first.nodes[n].status for n in "abc"] == ["finished", "failed", "skipped"]
    again = orch.wait(orch.rerun(first.id, from_failed=True), timeout=30)
    assert again.status == "finished", (again.error, again.nodes)
    assert again.results == 1
    assert (counted(orch, "a"), counted(orch, "b"), counted(orch, "c")) == (1, 2, 1)  # `a` did not run again
    assert again.nodes["a"].output == 1 and (again.nodes["a"].model_extra or {})["reused_from"] == first.id
    assert again.variables == {"day": "2026-12-04"}
    assert again.rerun_of == first.id
    assert again.trigger == {"type": "rerun", "run_id": first.id, "from_failed": True}
    assert orch.get_run(first.id).status == "failed"  # the original keeps its history


def test_a_whole_rerun_runs_every_node_again(orch: Orchestrator) -> None:
    line_with_a_flaky_middle(orch)
    first = orch.run("Line", timeout=30)
    again = orch.wait(orch.rerun(first.id), timeout=30)
    assert again.status == "finished"
    assert (counted(orch, "a"), counted(orch, "b")) == (2, 2)
    assert "reused_from" not in (again.nodes["a"].model_extra or {})


def test_a_rerun_from_a_node_runs_it_and_what_follows(orch: Orchestrator) -> None:
    line_with_a_flaky_middle(orch)
    orch.store.db["test_counts"].insert_one({"_id": "b", "n": 5})  # `b` succeeds from now on
    first = orch.run("Line", timeout=30)
    assert first.status == "finished"
    again = orch.wait(orch.rerun(first.id, from_node="b"), timeout=30)
    assert again.status == "finished"
    assert (counted(orch, "a"), counted(orch, "b"), counted(orch, "c")) == (1, 7, 2)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"from_failed": True}, "every node of run"),
        ({"from_node": "z"}, "has no node 'z'"),
    ],
)
def test_partial_reruns_that_cannot_be_are_refused(
    orch: Orchestrator, kwargs: dict[str, object], words: str
) -> None:
    orch.register(workflow("One", {"id": "a", "type": "set", "params": {"x": 1}}))
    run = orch.run("One", timeout=30)
    with pytest.raises(OrchestratorError, match=words):
        orch.rerun(run.id, **kwargs)  # type: ignore[arg-type]
    assert len(orch.list_runs(workflow="One")) == 1


def test_a_rerun_from_failed_of_an_active_run_is_refused(orch: Orchestrator) -> None:
    orch.register(workflow("Nap", {"id": "nap", "type": "sleep", "params": {"seconds": 5}}))
    run_id = orch.trigger("Nap")
    with pytest.raises(OrchestratorError, match="is still"):
        orch.rerun(run_id, from_failed=True)
    orch.cancel(run_id)


def test_runs_rerun_on_the_command_line(orch: Orchestrator, cli: CliRunner) -> None:
    line_with_a_flaky_middle(orch)
    first = orch.run("Line", timeout=30)
    result = cli.invoke(main, ["runs", "rerun", first.id[:10], "--from-failed", "--wait", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    doc = json.loads(result.stdout)
    assert doc["rerun_of"] == first.id and doc["status"] == "finished"
    listed = cli.invoke(main, ["runs", "list", "--trigger", "rerun", "--json"], catch_exceptions=False)
    assert [r["_id"] for r in json.loads(listed.stdout)] == [doc["_id"]]


def test_delete_workflow_is_refused_while_it_runs_unless_forced(orch: Orchestrator, cli: CliRunner) -> None:
    orch.register(workflow("Nap", {"id": "nap", "type": "sleep", "params": {"seconds": 10}}))
    run_id = orch.trigger("Nap")
    wait_for(lambda: orch.get_run(run_id).status == "running", what="the run to start")
    refused = cli.invoke(main, ["workflows", "delete", "Nap"])
    assert refused.exit_code == 1
    assert "has 1 active run" in refused.stderr and "--force" in refused.stderr
    assert orch.store.get_workflow("Nap")
    forced = cli.invoke(main, ["workflows", "delete", "Nap", "--force"])
    assert forced.exit_code == 0, forced.stderr
    with pytest.raises(WorkflowNotFound):
        orch.store.get_workflow("Nap")
    assert orch.get_run(run_id).workflow == "Nap"  # its runs stay
    orch.cancel(run_id)
    missing = cli.invoke(main, ["workflows", "delete", "Nap"])
    assert missing.exit_code == 2 and "no workflow named 'Nap'" in missing.stderr


def test_delete_workflow_through_the_api(orch: Orchestrator) -> None:
    orch.register(workflow("Gone", {"id": "a", "type": "set"}))
    run = orch.run("Gone", timeout=30)
    orch.delete_workflow("Gone")
    assert [w.name for w in orch.workflows()] == []
    assert orch.get_run(run.id).status == "finished"
    with pytest.raises(OrchestratorError, match="must be a string"):
        orch.delete_workflow({"$regex": "."})  # type: ignore[arg-type]
