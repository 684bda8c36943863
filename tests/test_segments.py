"""Long chains in segments: no message carries more than `SEGMENT_NODES` steps, and runs of
every shape still run each node once, in order, through the continuations."""

from __future__ import annotations

from typing import Any

import pytest
from celery import chord, group
from celery.canvas import Signature, _chain

from orchestrator import Orchestrator
from orchestrator.constants import CONTINUE_TASK
from orchestrator.definitions.spec import parse_workflow
from orchestrator.engine.compiler import compile_workflow
from orchestrator.engine.segments import SEGMENT_NODES, hand_over, tail_from
from tests.conftest import as_dict, workflow

pytestmark = pytest.mark.timeout(120)


def line(name: str, n: int, node_type: str = "set") -> dict[str, Any]:
    nodes = [
        {
            "id": f"n{i:03d}",
            "type": node_type,
            "params": {"i": i},
            **({"after": [f"n{i - 1:03d}"]} if i else {}),
        }
        for i in range(n)
    ]
    return workflow(name, *nodes)


def longest_chain(sig: Signature) -> int:
    if isinstance(sig, _chain):
        return max([len(sig.tasks), *(longest_chain(s) for s in sig.tasks)])
    if isinstance(sig, chord):
        return max([longest_chain(sig.body), *(longest_chain(s) for s in sig.tasks)])
    if isinstance(sig, group):
        return max(longest_chain(s) for s in sig.tasks)
    return 1


def test_a_long_line_compiles_to_a_segment_ending_with_its_continuation(orch: Orchestrator) -> None:
    spec = parse_workflow(line("Line", 100))
    canvas = compile_workflow(orch.app, spec, "r1", frozenset({"set"}), digest="d1")
    assert isinstance(canvas, _chain) and len(canvas.tasks) == SEGMENT_NODES
    last = canvas.tasks[-1]
    assert last.task == CONTINUE_TASK
    assert last.kwargs == {"run_id": "r1", "digest": "d1", "from_node": f"n{SEGMENT_NODES - 1:03d}"}
    assert canvas.tasks[-2].kwargs["hand_on"] and not last.immutable  # the snapshot goes on through it
    whole = compile_workflow(orch.app, spec, "r1", frozenset({"set"}))
    rest = tail_from(whole, f"n{SEGMENT_NODES - 1:03d}")
    assert isinstance(rest, _chain) and len(rest.tasks) == 100 - SEGMENT_NODES + 1
    handed = hand_over(rest, '{"_id": "r1"}')
    assert isinstance(handed, _chain) and handed.tasks[0].args == ('{"_id": "r1"}',)
    assert handed.tasks[0].immutable
    assert len(whole.tasks) == 100 and not whole.tasks[SEGMENT_NODES - 1].args  # the cached canvas is intact


def test_chains_inside_groups_and_chord_bodies_are_cut_too(orch: Orchestrator) -> None:
    branches = [
        {
            "id": f"{b}{i:02d}",
            "type": "set",
            **({"after": [f"{b}{i - 1:02d}"]} if i else {"after": ["start"]}),
        }
        for b in "ab"
        for i in range(30)
    ]
    spec = parse_workflow(
        workflow(
            "Fork",
            {"id": "start", "type": "set"},
            *branches,
            {"id": "end", "type": "set", "after": ["a29", "b29"]},
        )
    )
    canvas = compile_workflow(orch.app, spec, "r1", frozenset({"set"}), digest="d1")
    assert longest_chain(canvas) <= SEGMENT_NODES


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("n", [SEGMENT_NODES - 1, SEGMENT_NODES, SEGMENT_NODES + 1, 60])
def test_a_line_runs_every_node_once_in_order_through_its_continuations(orch: Orchestrator, n: int) -> None:
    spec = line(f"Line {n}", n, "count")
    for node in spec["nodes"]:
        node["params"] = {"key": f"{n}-{node['id']}"}
    orch.register(spec)
    run = orch.run(f"Line {n}", timeout=90)
    assert run.status == "finished", run.error
    starts = [run.nodes[f"n{i:03d}"].started_at for i in range(n)]
    assert starts == sorted(starts)  # type: ignore[type-var]
    counts = {d["_id"]: d["n"] for d in orch.store.db["test_counts"].find()}
    assert counts == {f"{n}-n{i:03d}": 1 for i in range(n)}


@pytest.mark.usefixtures("worker")
def test_a_long_branch_inside_a_fan_in_finishes_the_run(orch: Orchestrator) -> None:
    branch = [
        {"id": f"a{i:02d}", "type": "set", "params": {"i": i}, **({"after": [f"a{i - 1:02d}"]} if i else {})}
        for i in range(40)
    ]
    orch.register(
        workflow(
            "Fan",
            *branch,
            {"id": "b", "type": "sleep", "params": {"seconds": 0.2}},
            {"id": "end", "type": "set", "params": {"x": "{{ nodes.a39.output.i }}"}, "after": ["a39", "b"]},
            output="{{ nodes.end.output.x }}",
        )
    )
    run = orch.run("Fan", timeout=90)
    assert run.status == "finished", run.error
    assert run.results == 39


@pytest.mark.usefixtures("worker")
def test_the_snapshot_crosses_a_continuation_so_the_next_node_reads_nothing(orch: Orchestrator) -> None:
    orch.register(line("Peeks", SEGMENT_NODES + 3, "peek"))
    run = orch.run("Peeks", timeout=60)
    assert run.status == "finished", run.error
    handed = [as_dict(run.nodes[f"n{i:03d}"].output)["handed_on"] for i in range(SEGMENT_NODES + 3)]
    assert handed == [True] * (SEGMENT_NODES + 3)  # no node read the run: its launch handed it on
