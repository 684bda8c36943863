"""The `condition` node: its output, and the engine's skipping of the branch not taken."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator import Orchestrator
from orchestrator.store.models import Run
from tests.conftest import workflow
from workers.condition import ConditionParams, decide


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, {"result": True, "branch": "yes"}),
        (False, {"result": False, "branch": "no"}),
        ("text", {"result": True, "branch": "yes", "coerced_from": "str"}),
        ("", {"result": False, "branch": "no", "coerced_from": "str"}),
        (0, {"result": False, "branch": "no", "coerced_from": "int"}),
        ([1], {"result": True, "branch": "yes", "coerced_from": "list"}),
        (None, {"result": False, "branch": "no", "coerced_from": "NoneType"}),
    ],
)
def test_decide_follows_python_truthiness_and_says_when_it_coerced(value: Any, expected: Any) -> None:
    assert decide(value) == expected


def test_params_take_if_by_its_alias_and_by_name() -> None:
    assert ConditionParams.model_validate({"if": True}).if_ is True
    assert ConditionParams(if_=False).if_ is False


def branching(threshold: float) -> dict[str, Any]:
    return workflow(
        "Branching",
        {"id": "analyze", "type": "set", "params": {"volatility": 0.3}},
        {
            "id": "check",
            "type": "condition",
            "after": ["analyze"],
            "params": {"if": "{{ nodes.analyze.output.volatility > threshold }}"},
        },
        {"id": "alert", "type": "set", "after": ["check.yes"], "params": {"side": "yes"}},
        {"id": "after_alert", "type": "set", "after": ["alert"]},
        {"id": "calm", "type": "set", "after": ["check.no"], "params": {"side": "no"}},
        {"id": "after_calm", "type": "set", "after": ["calm"]},
        {"id": "always", "type": "set", "after": ["check"], "params": {"ran": True}},
        variables={"threshold": threshold},
    )


def statuses(run: Run) -> dict[str, str]:
    return {node_id: state.status for node_id, state in run.nodes.items()}


@pytest.mark.usefixtures("worker")
def test_true_runs_the_yes_side_and_skips_everything_only_the_no_side_leads_to(orch: Orchestrator) -> None:
    orch.register(branching(threshold=0.1))
    run = orch.run("Branching", timeout=30)
    assert run.status == "finished"
    assert run.nodes["check"].output == {"result": True, "branch": "yes"}
    assert statuses(run) == {
        "analyze": "finished",
        "check": "finished",
        "alert": "finished",
        "after_alert": "finished",
        "calm": "skipped",
        "after_calm": "skipped",
        "always": "finished",
    }
    assert "branch 'check.no' not taken" in (run.nodes["calm"].error or "")


@pytest.mark.usefixtures("worker")
def test_false_runs_the_no_side_and_skips_the_yes_side(orch: Orchestrator) -> None:
    orch.register(branching(threshold=0.9))
    run = orch.run("Branching", variables={"threshold": 0.9}, timeout=30)
    assert run.status == "finished"
    assert run.nodes["check"].output == {"result": False, "branch": "no"}
    assert statuses(run) == {
        "analyze": "finished",
        "check": "finished",
        "alert": "skipped",
        "after_alert": "skipped",
        "calm": "finished",
        "after_calm": "finished",
        "always": "finished",
    }


@pytest.mark.usefixtures("worker")
def test_text_is_read_by_truthiness_and_the_output_says_so(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Text Condition",
            {"id": "check", "type": "condition", "params": {"if": "level {{ level }}"}},
            {"id": "yes", "type": "set", "after": ["check.yes"]},
            variables={"level": 0},
        )
    )
    run = orch.run("Text Condition", timeout=30)
    assert run.nodes["check"].output == {"result": True, "branch": "yes", "coerced_from": "str"}
    assert run.nodes["yes"].status == "finished"


@pytest.mark.usefixtures("worker")
def test_expressions_run_in_the_sandbox(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Escape Attempt",
            {"id": "check", "type": "condition", "params": {"if": "{{ ''.__class__.__mro__ }}"}},
            {"id": "yes", "type": "set", "after": ["check.yes"]},
        )
    )
    run = orch.run("Escape Attempt", timeout=30)
    assert run.status == "failed"
    assert run.nodes["check"].error == (
        "node 'check', parameter 'if': not allowed in a template: "
        "access to attribute '__class__' of 'str' object is unsafe."
    )
    assert run.nodes["yes"].status == "skipped"


def test_if_is_required() -> None:
    with pytest.raises(ValidationError, match="if"):
        ConditionParams.model_validate({})
