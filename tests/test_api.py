"""The Python API (docs/python-api.md) on a real worker."""

from __future__ import annotations

import pytest

from orchestrator import Orchestrator, OrchestratorError, WaitTimeout, WorkflowSpec
from tests.conftest import workflow

pytestmark = pytest.mark.usefixtures("worker")


def test_register_accepts_a_dict_a_spec_and_a_file(orch: Orchestrator, tmp_path: object) -> None:
    spec = orch.register(workflow("From Dict", {"id": "a", "type": "set"}))
    assert isinstance(spec, WorkflowSpec)
    assert orch.register(spec.model_copy(update={"name": "From Spec"})).name == "From Spec"
    assert {w.name for w in orch.workflows()} == {"From Dict", "From Spec"}


def test_variables_given_at_trigger_override_the_defaults(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Vars",
            {"id": "a", "type": "set", "params": {"s": "{{ symbol }}", "l": "{{ limit }}"}},
            variables={"symbol": "BTC", "limit": 5},
        )
    )
    run = orch.run("Vars", {"symbol": "ETH"}, timeout=30)
    assert run.nodes["a"].output == {"s": "ETH", "l": 5}


def test_variables_that_are_not_json_are_refused(orch: Orchestrator) -> None:
    orch.register(workflow("Vars", {"id": "a", "type": "set"}))
    with pytest.raises(OrchestratorError, match="variable 'when' is not JSON"):
        orch.trigger("Vars", {"when": object()})


def test_wait_raises_wait_timeout_and_the_run_goes_on(orch: Orchestrator) -> None:
    orch.register(workflow("Nap", {"id": "nap", "type": "sleep", "params": {"seconds": 1.5}}))
    run_id = orch.trigger("Nap")
    with pytest.raises(WaitTimeout) as info:
        orch.wait(run_id, timeout=0.2)
    assert isinstance(info.value, OrchestratorError) and info.value.run_id == run_id
    assert orch.wait(run_id, timeout=30).status == "finished"


def test_list_runs_filters_by_workflow_and_status(orch: Orchestrator) -> None:
    orch.register(workflow("Ok", {"id": "a", "type": "set"}))
    orch.register(workflow("Bad", {"id": "a", "type": "fail"}))
    ok, bad = orch.run("Ok", timeout=30), orch.run("Bad", timeout=30)
    assert [r.id for r in orch.list_runs(workflow="Ok")] == [ok.id]
    assert [r.id for r in orch.list_runs(status="failed")] == [bad.id]
    assert orch.run_tree(ok.id).children == []
