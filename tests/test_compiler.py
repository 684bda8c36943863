"""The compiler builds chains, groups and chords explicitly; checked without a broker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import chord, group
from celery.canvas import Signature, _chain

from orchestrator.definitions.spec import parse_workflow
from orchestrator.engine.app import OrchestratorApp
from orchestrator.engine.compiler import compile_workflow, first_steps, hand_to_first_steps
from orchestrator.engine.factory import create_app
from orchestrator.settings import Settings
from orchestrator.store.models import new_run_document
from tests.conftest import not_none


@pytest.fixture(scope="module")
def app() -> OrchestratorApp:
    return create_app(Settings(REDIS_URL="redis://127.0.0.1:1/0", MONGO_URL="mongodb://127.0.0.1:1/x"))


def shape(sig: Signature) -> Any:
    """A canvas as nested tuples of node ids: ('chain', ...), ('group', ...), ('chord', header, body)."""
    if isinstance(sig, chord):
        return ("chord", tuple(shape(t) for t in sig.tasks), shape(sig.body))
    if isinstance(sig, group):
        return ("group", tuple(shape(t) for t in sig.tasks))
    if isinstance(sig, _chain):
        return ("chain", tuple(shape(t) for t in sig.tasks))
    if sig.task == "orchestrator.finalize_run":
        return "END"
    if sig.task == "orchestrator.join":
        return "JOIN"
    node_id: str = sig.kwargs["node"]["id"]
    return f"{node_id}+END" if "final" in sig.kwargs else node_id


def compiled(app: OrchestratorApp, edges: dict[str, list[str]]) -> Any:
    spec = parse_workflow(
        {"name": "W", "nodes": [{"id": n, "type": "set", "after": a} for n, a in edges.items()]}
    )
    return shape(compile_workflow(app, spec, "run1"))


def test_straight_line_is_one_flat_chain(app: OrchestratorApp) -> None:
    assert compiled(app, {"a": [], "b": ["a"], "c": ["b"]}) == ("chain", ("a", "b", "c+END"))


def test_independent_nodes_are_a_group_joined_by_the_end(app: OrchestratorApp) -> None:
    assert compiled(app, {"a": [], "b": []}) == ("chord", ("a", "b"), "END")


def test_fan_out_then_fan_in_is_a_chain_with_a_chord(app: OrchestratorApp) -> None:
    assert compiled(app, {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) == (
        "chain",
        ("a", ("chord", ("b", "c"), "d+END")),
    )


def test_branches_of_different_length_stay_independent(app: OrchestratorApp) -> None:
    assert compiled(app, {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": ["c", "d"]}) == (
        "chain",
        ("a", ("chord", (("chain", ("b", "c")), "d"), "e+END")),
    )


def test_fan_out_inside_a_fan_in_is_closed_by_a_join(app: OrchestratorApp) -> None:
    # x fans out to y and z; w is independent; t waits for y, z and w.
    result = compiled(app, {"x": [], "y": ["x"], "z": ["x"], "w": [], "t": ["y", "z", "w"]})
    assert result == (
        "chord",
        ("w", ("chain", ("x", ("chord", ("y", "z"), "JOIN")))),
        "t+END",
    )


def test_non_series_parallel_graph_gets_a_barrier_after_its_sources(app: OrchestratorApp) -> None:
    # the "N": c waits for a; d waits for a and b.
    result = compiled(app, {"a": [], "b": [], "c": ["a"], "d": ["a", "b"]})
    assert result == ("chord", ("a", "b"), ("chord", ("c", "d"), "END"))


def test_every_node_is_one_immutable_message_named_after_its_type(app: OrchestratorApp) -> None:
    spec = parse_workflow(
        {"name": "W", "nodes": [{"id": "a", "type": "sleep", "params": {"seconds": 1}, "timeout_s": 5}]}
    )
    first = compile_workflow(app, spec, "run1")
    assert first.task == "workers.sleep" and first.immutable
    assert first.kwargs == {
        "run_id": "run1",
        "node": {"id": "a", "type": "sleep", "params": {"seconds": 1}, "timeout_s": 5.0},
        "first": True,  # the only source: its start stamps the run's start
        "final": {"output": None, "final_nodes": ["a"]},  # the only node also ends the run
    }
    assert first.options["soft_time_limit"] == 6.0  # timeout_s 5 + a second for the node's own deadline
    assert first.options["kwargsrepr"] == "run run1, node 'a'"  # what Flower shows, not the whole spec


def test_a_line_of_three_thousand_nodes_compiles_flat_without_recursion(app: OrchestratorApp) -> None:
    ids = [f"n{i}" for i in range(3000)]
    shape_ = compiled(app, {n: ([ids[i - 1]] if i else []) for i, n in enumerate(ids)})
    assert shape_ == ("chain", (*ids[:-1], "n2999+END"))


def test_a_line_that_fans_out_keeps_the_line_then_the_group(app: OrchestratorApp) -> None:
    assert compiled(app, {"a": [], "b": ["a"], "c": ["b"], "d": ["b"]}) == (
        "chain",
        ("a", "b", ("chord", ("c", "d"), "END")),
    )


def handing(app: OrchestratorApp, nodes: list[dict[str, Any]]) -> dict[str, tuple[bool, bool]]:
    """For each node of the compiled canvas: (hands the document on, takes it from the node before)."""
    canvas = compile_workflow(
        app, parse_workflow({"name": "W", "nodes": nodes}), "run1", app.registry.handed_types()
    )
    found: dict[str, tuple[bool, bool]] = {}

    def walk(sig: Signature) -> None:
        if isinstance(sig, chord):
            walk(group(sig.tasks))
            walk(sig.body)
        elif isinstance(sig, group | _chain):
            for member in sig.tasks:
                walk(member)
        elif sig.task.startswith("workers."):
            found[sig.kwargs["node"]["id"]] = (bool(sig.kwargs.get("hand_on")), not sig.immutable)

    walk(canvas)
    return found


def test_a_node_hands_the_run_document_on_to_the_next_unless_that_one_waits(app: OrchestratorApp) -> None:
    assert handing(
        app,
        [
            {"id": "a", "type": "set"},
            {"id": "b", "type": "sleep", "after": ["a"], "params": {"seconds": 0}},
            {"id": "c", "type": "run_workflow", "after": ["b"], "params": {"workflow": "X", "mode": "wait"}},
            {"id": "d", "type": "condition", "after": ["c"], "params": {"if": True}},
        ],
    ) == {
        "a": (True, False),  # the first node reads the document; hands it on to b
        "b": (False, True),  # c waits: it starts (and reads) as a node after parallel work does
        "c": (True, False),
        "d": (False, True),
    }


def test_parallel_work_is_handed_the_document_and_after_it_a_node_reads(app: OrchestratorApp) -> None:
    assert handing(
        app,
        [
            {"id": "a", "type": "set"},
            {"id": "b", "type": "set", "after": ["a"]},
            {"id": "c", "type": "set", "after": ["a"]},
            {"id": "d", "type": "merge", "after": ["b", "c"]},
        ],
    ) == {"a": (True, False), "b": (False, True), "c": (False, True), "d": (False, False)}


def test_a_node_hands_parallel_work_only_the_states_it_reads(app: OrchestratorApp) -> None:
    nodes = [
        {"id": "root", "type": "set"},
        {"id": "far", "type": "set"},
        {"id": "b", "type": "set", "after": ["root"], "params": {"x": "{{ nodes.far.output }}"}},
        {"id": "c", "type": "set", "after": ["root"]},
        {"id": "py", "type": "python", "after": ["root"], "params": {"code": "result = 1"}},  # reads all
        {"id": "w", "type": "run_workflow", "after": ["root"], "params": {"workflow": "X"}},  # waits
    ]
    canvas = compile_workflow(
        app, parse_workflow({"name": "W", "nodes": nodes}), "run1", app.registry.handed_types()
    )
    found: dict[str, Signature] = {}

    def walk(sig: Signature) -> None:
        if isinstance(sig, group | _chain | chord):
            for member in [*sig.tasks, *([sig.body] if isinstance(sig, chord) else [])]:
                walk(member)
        elif sig.task.startswith("workers."):
            found[sig.kwargs["node"]["id"]] = sig

    walk(canvas)
    root = found["root"]
    # c takes it (it reads root only); b reads `far`, not a dependency: b reads the document
    assert (root.kwargs["hand_on"], root.kwargs.get("hand_to")) == (["root"], None)
    assert [n for n in ("b", "c", "py", "w") if not found[n].immutable] == ["c"]


def test_a_handed_on_message_shows_what_it_carries_not_the_document(app: OrchestratorApp) -> None:
    spec = parse_workflow(
        {"name": "W", "nodes": [{"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": ["a"]}]}
    )
    canvas = compile_workflow(app, spec, "run1", app.registry.handed_types())
    assert isinstance(canvas, _chain)
    assert canvas.tasks[1].options["argsrepr"] == "(the run document the node before handed on)"


def test_a_fire_and_forget_child_node_is_handed_the_document_and_a_waiting_one_is_not(
    app: OrchestratorApp,
) -> None:
    def child(node_id: str, mode: str, after: str) -> dict[str, Any]:
        params = {"workflow": "X", "mode": mode}
        return {"id": node_id, "type": "run_workflow", "after": [after], "params": params}

    assert handing(
        app,
        [
            {"id": "a", "type": "set"},
            child("ff", "fire_and_forget", "a"),
            child("templated", "{{ mode }}", "ff"),  # may wait: it reads the document
            {"id": "d", "type": "set", "after": ["templated"]},
        ],
    ) == {"a": (True, False), "ff": (False, True), "templated": (True, False), "d": (False, True)}


def launch_snapshots(app: OrchestratorApp, nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """For each node a new run of `nodes` starts with: the snapshot its launch hands it."""
    spec = parse_workflow({"name": "W", "nodes": nodes})
    handed = app.registry.handed_types()
    canvas = compile_workflow(app, spec, "run1", handed)
    doc = new_run_document(
        run_id="run1", workflow="W", node_ids=[n.id for n in spec.nodes], variables={"v": 1}, trigger={}
    )
    hand_to_first_steps(app, spec, canvas, doc, handed)
    return {
        sig.kwargs["node"]["id"]: json.loads(sig.args[0]) if sig.args else None for sig in first_steps(canvas)
    }


def test_the_first_nodes_are_handed_the_new_runs_document_with_what_each_reads(app: OrchestratorApp) -> None:
    handed = launch_snapshots(
        app,
        [
            {"id": "r1", "type": "set"},
            {"id": "r2", "type": "set", "params": {"x": "{{ nodes.late.output }}"}},
            {"id": "ff", "type": "run_workflow", "params": {"workflow": "X", "mode": "fire_and_forget"}},
            {"id": "w", "type": "run_workflow", "params": {"workflow": "X"}},  # waits: reads
            {"id": "late", "type": "set", "after": ["r1", "r2", "ff", "w"]},
        ],
    )
    assert handed["w"] is None
    r1, r2, ff = (not_none(handed[n]) for n in ("r1", "r2", "ff"))
    assert r1["_id"] == "run1" and r1["status"] == "pending" and r1["variables"] == {"v": 1}
    assert "parent_run_id" not in r1 and "created_at" not in r1 and r1["_size"] > 0  # no None, no times
    assert (r1["nodes"], ff["nodes"]) == ({"r1": {"status": "pending"}}, {"ff": {"status": "pending"}})
    assert r2["nodes"] == {"late": {"status": "pending"}, "r2": {"status": "pending"}}


def test_a_first_node_that_hands_on_is_handed_the_whole_new_document(app: OrchestratorApp) -> None:
    handed = launch_snapshots(app, [{"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": ["a"]}])
    assert set(not_none(handed["a"])["nodes"]) == {"a", "b"}
