"""Workflow files are validated at load time, with errors that name workflow, node and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definitions.spec import parse_workflow
from orchestrator.definitions.workflow_files import load_workflow_file
from orchestrator.errors import WorkflowValidationError

KNOWN = ["set", "sleep", "condition"]


def wf(*nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "W", "nodes": list(nodes), **extra}


def problems_of(data: Any) -> str:
    with pytest.raises(WorkflowValidationError) as info:
        parse_workflow(data, KNOWN)
    return str(info.value)


def test_valid_workflow_loads_with_defaults() -> None:
    spec = parse_workflow(
        wf(
            {"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": "a", "retry": {"max_attempts": 2}}
        ),
        KNOWN,
    )
    assert spec.node("b").after == ["a"]
    retry = spec.node("b").retry
    assert retry is not None and retry.backoff_s == 2
    assert [n.id for n in spec.final_nodes()] == ["b"]


def test_duplicate_node_id_is_named() -> None:
    message = problems_of(wf({"id": "a", "type": "set"}, {"id": "a", "type": "set"}))
    assert "workflow 'W'" in message and "node 'a'" in message and "duplicate id" in message


@pytest.mark.parametrize("bad_id", ["Fetch", "1a", "a-b", "a.b", ""])
def test_malformed_node_id_is_refused(bad_id: str) -> None:
    assert "must match [a-z][a-z0-9_]*" in problems_of(wf({"id": bad_id, "type": "set"}))


def test_after_naming_no_node_is_refused() -> None:
    message = problems_of(wf({"id": "a", "type": "set", "after": ["ghost"]}))
    assert "node 'a'" in message and "field 'after'" in message and "'ghost' names no node" in message


def test_branch_on_a_node_that_is_not_a_condition_is_refused() -> None:
    message = problems_of(wf({"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": ["a.yes"]}))
    assert "'a.yes' is not a branch of 'a'" in message and "it has no branches" in message


def test_branch_of_a_condition_is_accepted() -> None:
    spec = parse_workflow(
        wf({"id": "c", "type": "condition"}, {"id": "b", "type": "set", "after": ["c.no"]}), KNOWN
    )
    assert spec.node("b").dependencies() == [("c", "no")]


def test_cycle_names_its_nodes() -> None:
    message = problems_of(
        wf(
            {"id": "a", "type": "set", "after": ["c"]},
            {"id": "b", "type": "set", "after": ["a"]},
            {"id": "c", "type": "set", "after": ["b"]},
        )
    )
    assert "cycle" in message
    for node_id in "abc":
        assert f"{node_id} ->" in message or f"-> {node_id}" in message


def test_unknown_node_type_is_named_with_the_known_ones() -> None:
    message = problems_of(wf({"id": "a", "type": "teleport"}))
    assert "node 'a'" in message and "unknown node type 'teleport'" in message and "set" in message


def test_non_json_params_are_refused_with_the_field() -> None:
    message = problems_of(wf({"id": "a", "type": "set", "params": {"when": object()}}))
    assert "node 'a', field 'params.when'" in message


def test_template_syntax_error_names_node_and_parameter() -> None:
    message = problems_of(wf({"id": "a", "type": "set", "params": {"x": "{{ symbol "}}))
    assert "node 'a'" in message and "params.x" in message and "syntax error" in message


def test_unknown_field_and_missing_nodes_are_reported_together() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        parse_workflow({"name": "W", "nodez": []}, KNOWN)
    assert len(info.value.problems) == 2
    assert any("field 'nodes'" in p for p in info.value.problems)
    assert any("field 'nodez'" in p for p in info.value.problems)


def test_bad_cron_is_refused() -> None:
    assert "5 fields" in problems_of(wf({"id": "a", "type": "set"}, schedule={"cron": "every day"}))


def test_yaml_file_with_a_date_is_refused_as_non_json(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: W\nnodes:\n  - id: a\n    type: set\n    params: {day: 2024-01-01}\n")
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow_file(path, KNOWN)
    assert str(path) in str(info.value) and "params.day" in str(info.value)


def test_json_and_yaml_files_load_alike(tmp_path: Path) -> None:
    data = wf({"id": "a", "type": "set", "params": {"x": "{{ symbol }}"}}, variables={"symbol": "BTC"})
    (tmp_path / "w.json").write_text(json.dumps(data))
    (tmp_path / "w.yaml").write_text(
        "name: W\nvariables: {symbol: BTC}\nnodes:\n  - {id: a, type: set, params: {x: '{{ symbol }}'}}\n"
    )
    assert load_workflow_file(tmp_path / "w.json", KNOWN) == load_workflow_file(tmp_path / "w.yaml", KNOWN)


def test_unparsable_yaml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(WorkflowValidationError, match="not valid YAML"):
        load_workflow_file(path, KNOWN)


def test_examples_are_valid() -> None:
    from orchestrator.engine.registry import load_registry

    known = load_registry().names()
    for path in sorted((Path(__file__).parent.parent / "examples" / "workflows").glob("*.yaml")):
        assert load_workflow_file(path, known).name


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"cron": "61 8 * * *"}, "not a valid cron expression"),
        ({"cron": "0 8 * * *", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_a_bad_schedule_is_refused_at_load_time(schedule: dict[str, str], message: str) -> None:
    data = {"name": "Nightly", "schedule": schedule, "nodes": [{"id": "a", "type": "set"}]}
    with pytest.raises(WorkflowValidationError) as caught:
        parse_workflow(data)
    assert message in str(caught.value) and "schedule" in str(caught.value)


def test_a_node_type_cannot_be_both_pure_and_waiting() -> None:
    from pydantic import BaseModel

    from orchestrator.engine.registry import NodeType
    from orchestrator.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"'waits_purely' cannot be pure and wait.*may_wait"):
        NodeType(
            name="waits_purely",
            params=BaseModel,
            run=lambda p, c: None,
            resume=lambda d, c, t: None,
            pure=True,
        )


def test_the_built_in_logic_types_are_pure_and_those_with_effects_are_not() -> None:
    from orchestrator.engine.registry import load_registry

    types = load_registry().types
    pure = {name for name, node_type in types.items() if node_type.pure}
    assert pure == {"set", "condition", "merge", "sort_filter", "run_workflow"}
    # run_workflow only when it does not wait: its child is sent once its end is recorded
    run_workflow = types["run_workflow"]
    assert run_workflow.pure_for({"workflow": "w", "mode": "fire_and_forget"})
    assert not run_workflow.pure_for({"workflow": "w", "mode": "wait"})
    assert not run_workflow.pure_for({"workflow": "w", "mode": "{{ mode }}"})
    assert not run_workflow.pure_for({"workflow": "w"})  # the default mode waits
