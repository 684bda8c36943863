"""Wide workflows: from `WIDE_NODES` nodes on, each node reads from the run document only
the states of the nodes it uses (itself, its dependencies, the nodes its templates name), so
that a node costs the same however wide the workflow; nodes that may read any node read all."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.definitions.spec import NodeSpec, parse_workflow
from orchestrator.definitions.template_refs import nodes_read
from orchestrator.engine.compiler import WIDE_NODES, compile_workflow, node_reads
from tests.conftest import as_dict, workflow

WIDTH = WIDE_NODES + 10


def fan(name: str, *extra: dict[str, Any]) -> dict[str, Any]:
    """`src` fanned out to WIDTH `set` nodes that read `src`, then `end` reading two of them."""
    leaves = [
        {
            "id": f"n{i:03d}",
            "type": "set",
            "params": {"v": "{{ nodes.src.output.base + " + str(i) + " }}"},
            "after": ["src"],
        }
        for i in range(WIDTH)
    ]
    end = {
        "id": "end",
        "type": "set",
        "params": {
            "first": "{{ nodes.n000.output.v }}",
            "last": "{{ nodes['" + f"n{WIDTH - 1:03d}" + "'].output.v }}",
        },
        "after": [leaf["id"] for leaf in leaves],
    }
    src = {"id": "src", "type": "set", "params": {"base": 100}}
    return workflow(name, src, *leaves, end, *extra, output="{{ nodes.end.output }}")


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("{{ nodes.a.output }}", {"a"}),
        ("{{ nodes['b'].output.x + nodes.c.output }}", {"b", "c"}),
        ("{{ symbol }}", set()),
        ("{{ nodes[name].output }}", None),
        ("{% for n in nodes %}{{ n }}{% endfor %}", None),
        ("{{ nodes | length }}", None),
    ],
)
def test_the_nodes_a_template_reads_are_found_or_said_unknown(text: str, read: set[str] | None) -> None:
    assert nodes_read(text) == read


def test_a_wide_workflows_nodes_carry_what_they_read_and_a_narrow_ones_do_not(orch: Orchestrator) -> None:
    spec = parse_workflow(fan("Wide"))
    canvas = compile_workflow(orch.app, spec, "r1", frozenset({"set"}))
    header = canvas.tasks[1].tasks  # src, then the chord of WIDTH leaves
    assert header[0].kwargs["reads"] == ["n000", "src"]
    assert "reads" not in canvas.tasks[1].body.kwargs  # the last node decides the run: it reads all
    # src hands the WIDTH leaves (each reads src and itself) one snapshot: src's state only
    assert (canvas.tasks[0].kwargs["hand_on"], canvas.tasks[0].kwargs["hand_to"]) == (["src"], WIDTH)
    assert not any(leaf.immutable for leaf in header)
    narrow = parse_workflow(
        workflow("Narrow", {"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": ["a"]})
    )
    assert all(
        "reads" not in sig.kwargs
        for sig in compile_workflow(orch.app, narrow, "r2", frozenset({"set"})).tasks
    )


def test_a_node_that_sees_every_node_or_picks_them_at_run_time_reads_all(orch: Orchestrator) -> None:
    assert node_reads(orch.app, NodeSpec(id="p", type="python", params={"code": "result = 1"})) is None
    assert node_reads(orch.app, NodeSpec(id="s", type="set", params={"x": "{{ nodes[k].output }}"})) is None
    where = {"items": "{{ nodes.a.output }}", "where": "item > nodes.t.output"}
    assert node_reads(orch.app, NodeSpec(id="f", type="sort_filter", params=where, after=["a"])) == [
        "a",
        "f",
        "t",
    ]


@pytest.mark.usefixtures("worker")
@pytest.mark.timeout(120)
def test_a_wide_fan_out_runs_with_each_node_reading_only_its_inputs(orch: Orchestrator) -> None:
    orch.register(fan("Wide Fan"))
    run = orch.run("Wide Fan", timeout=90)
    assert run.status == "finished", run.error
    assert as_dict(run.results) == {"first": 100, "last": 100 + WIDTH - 1}
    assert as_dict(run.nodes[f"n{WIDTH - 1:03d}"].output) == {"v": 100 + WIDTH - 1}


@pytest.mark.usefixtures("worker")
@pytest.mark.timeout(180)
def test_wide_child_runs_fire_and_forget_and_waited_for_all_finish(orch: Orchestrator) -> None:
    orch.register(
        workflow("Leaf", {"id": "x", "type": "set", "params": {"n": "{{ n }}"}}, variables={"n": 0})
    )
    calls = [
        {
            "id": f"c{i:03d}",
            "type": "run_workflow",
            "params": {
                "workflow": "Leaf",
                "mode": "wait" if i % 2 else "fire_and_forget",
                "variables": {"n": i},
            },
        }
        for i in range(WIDTH)
    ]
    orch.register(workflow("Wide Calls", *calls))
    run = orch.run("Wide Calls", timeout=150)
    assert run.status == "finished", run.error
    waited = [as_dict(run.nodes[f"c{i:03d}"].output) for i in range(1, WIDTH, 2)]
    assert all(out["targetStatus"] == "finished" for out in waited)
    assert [out["targetResults"] for out in waited[:2]] == [{"x": {"n": 1}}, {"x": {"n": 3}}]
    assert len(orch.list_runs(parent=run.id, limit=1000)) == WIDTH


@pytest.mark.usefixtures("worker")
@pytest.mark.timeout(120)
def test_a_python_node_in_a_wide_workflow_still_sees_every_node(orch: Orchestrator) -> None:
    code = "result = sum(node['output']['v'] for name, node in nodes.items() if name.startswith('n'))"
    spec = fan("Wide Python", {"id": "sum", "type": "python", "params": {"code": code}, "after": ["end"]})
    spec["output"] = "{{ nodes.sum.output }}"
    orch.register(spec)
    run = orch.run("Wide Python", timeout=90)
    assert run.status == "finished", run.nodes["sum"].error
    assert run.results == sum(100 + i for i in range(WIDTH))


def wide_line(name: str, far_reader: int) -> dict[str, Any]:
    """WIDTH `set` nodes in a line, each adding 1 to the one before; node `far_reader` also
    reads node l000, which the node before it did not read."""
    nodes: list[dict[str, Any]] = [{"id": "l000", "type": "set", "params": {"v": 0}}]
    for i in range(1, WIDTH):
        value = "{{ nodes.l" + f"{i - 1:03d}" + ".output.v + 1 }}"
        params: dict[str, Any] = {"v": value}
        if i == far_reader:
            params["first"] = "{{ nodes.l000.output.v }}"
        nodes.append({"id": f"l{i:03d}", "type": "set", "params": params, "after": [f"l{i - 1:03d}"]})
    return workflow(name, *nodes, output="{{ nodes." + f"l{WIDTH - 1:03d}" + ".output }}")


def test_a_wide_line_hands_on_only_the_states_the_next_node_reads(orch: Orchestrator) -> None:
    spec = parse_workflow(wide_line("Wide Line", far_reader=7))
    canvas = compile_workflow(orch.app, spec, "r1", frozenset({"set"}))
    steps = {sig.kwargs["node"]["id"]: sig.kwargs for sig in canvas.tasks}
    assert steps["l001"]["hand_on"] == ["l001", "l002"]  # what l002 reads: its input and itself
    assert "hand_on" not in steps["l006"]  # l007 also reads l000, which l006 did not read
    assert steps["l007"]["hand_on"] == ["l007", "l008"]
    last = f"l{WIDTH - 1:03d}"
    assert "hand_on" not in steps[f"l{WIDTH - 2:03d}"] and "reads" not in steps[last]  # the last reads all


def test_a_wide_line_runs_from_the_states_handed_on(orch: Orchestrator) -> None:
    orch.register(wide_line("Wide Line", far_reader=40))
    run = orch.run("Wide Line", timeout=120)
    assert run.status == "finished", run.error
    assert as_dict(run.results) == {"v": WIDTH - 1}
    assert as_dict(run.nodes["l040"].output) == {"v": 40, "first": 0}
    assert {state.status for state in run.nodes.values()} == {"finished"}
