"""Workflow graphs drawn on the server (orchestrator/ui/graph.py): layers, crossings, SVG."""

from __future__ import annotations

import re
from itertools import pairwise
from xml.etree import ElementTree

from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.ui.graph import GraphNode, NodeView, crossings, layers_of, layout, render_svg, run_nodes

SVG = "{http://www.w3.org/2000/svg}"


def node(node_id: str, *after: str, type_: str = "set") -> GraphNode:
    deps = tuple((a.partition(".")[0], a.partition(".")[2] or None) for a in after)
    return GraphNode(node_id, type_, deps)


def test_a_nodes_layer_is_its_longest_path_from_a_source() -> None:
    nodes = [node("a"), node("b", "a"), node("c", "b", "a"), node("d"), node("e", "d", "c")]
    assert layers_of(nodes) == {"a": 0, "b": 1, "c": 2, "d": 0, "e": 3}


def test_a_cycle_or_an_unknown_dependency_does_not_hang_the_layout() -> None:
    nodes = [node("a", "c"), node("b", "a"), node("c", "b"), node("d", "ghost")]
    assert set(layers_of(nodes)) == {"a", "b", "c", "d"} and layers_of(nodes)["d"] == 0
    assert len(layout(nodes).boxes) == 4


def test_edges_point_rightwards_and_long_ones_bend_between_the_layers() -> None:
    drawn = layout([node("a"), node("b", "a"), node("c", "b", "a")])
    edges = {(e.source, e.target): e for e in drawn.edges}
    assert len(edges[("a", "c")].points) == 3 and len(edges[("a", "b")].points) == 2
    for edge in drawn.edges:
        xs = [x for x, _ in edge.points]
        assert xs == sorted(xs)
    assert drawn.boxes["a"][0] < drawn.boxes["b"][0] < drawn.boxes["c"][0]


def test_barycenter_ordering_removes_avoidable_crossings() -> None:
    # given in an order where a->y and b->x cross, and so do c's and d's edges
    nodes = [node("a"), node("b"), node("c"), node("x", "b"), node("y", "a"), node("z", "c"), node("w", "y")]
    drawn = layout(nodes)
    by_column: dict[float, list[str]] = {}
    for node_id, (x, _y) in sorted(drawn.boxes.items(), key=lambda item: item[1][1]):
        by_column.setdefault(x, []).append(node_id)
    columns = [by_column[x] for x in sorted(by_column)]
    succs = {"a": ["y"], "b": ["x"], "c": ["z"], "x": [], "y": ["w"], "z": [], "w": []}
    assert sum(crossings(a, b, succs) for a, b in pairwise(columns)) == 0


def test_crossings_are_counted_as_inversions() -> None:
    succs = {"a": ["y"], "b": ["x"], "c": ["x", "y"]}
    assert crossings(["a", "b"], ["x", "y"], succs) == 1
    assert crossings(["b", "a"], ["x", "y"], succs) == 0
    assert crossings(["a", "b", "c"], ["x", "y"], succs) == 2


def test_svg_nodes_carry_their_id_status_duration_attempts_and_branch_labels() -> None:
    nodes = [node("check", type_="condition"), node("yes_path", "check.yes"), node("no_path", "check.no")]
    views = {"check": NodeView("finished", "0.12 s", 1), "yes_path": NodeView("failed", "3.0 s", 3)}
    svg = ElementTree.fromstring(str(render_svg(nodes, views)))
    groups = {g.get("data-node"): g for g in svg.iter(f"{SVG}g")}
    assert set(groups) == {"check", "yes_path", "no_path"}
    assert "status-failed" in (groups["yes_path"].get("class") or "").split()
    assert "status-none" in (groups["no_path"].get("class") or "").split()
    texts = {t.get("data-field") or t.get("class"): t.text for t in groups["yes_path"].iter(f"{SVG}text")}
    assert texts == {"node-id": "yes_path", "node-type": "set", "duration": "3.0 s", "attempts": "3 attempts"}
    labels = sorted(t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "edge-label")
    assert labels == ["no", "yes"]


def test_svg_escapes_what_users_wrote() -> None:
    nodes = [GraphNode("a", "<script>x</script>"), GraphNode("b", "t", (("a", '"><img src=x onerror=1>'),))]
    svg = str(render_svg(nodes, {"a": NodeView('fin"ished', "<b>", 1)}))
    assert "<script>" not in svg and "<img" not in svg and 'fin"ished' not in svg
    assert "&lt;script&gt;" in svg and "&#34;&gt;&lt;img" in svg
    ElementTree.fromstring(svg)  # well-formed


def test_a_run_of_a_deleted_workflow_is_drawn_without_edges() -> None:
    assert run_nodes(None, ["b", "a"]) == [GraphNode("b"), GraphNode("a")]
    spec = WorkflowSpec.model_validate(
        {"name": "W", "nodes": [{"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": ["a"]}]}
    )
    assert run_nodes(spec, ["a", "b", "gone"]) == [
        GraphNode("a", "set"),
        GraphNode("b", "set", (("a", None),)),
        GraphNode("gone"),
    ]
    assert run_nodes(spec, ["b"]) == [GraphNode("b", "set", ())]
    assert not re.search(r'class="edge"', str(render_svg(run_nodes(None, ["a", "b"]))))
