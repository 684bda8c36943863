"""Workflow graphs as SVG, laid out on the server: no JavaScript library draws them.

A layered drawing (Sugiyama's scheme, kept small): each node's layer is the longest path to
it from a node without dependencies, so every edge points rightwards; an edge that spans
several layers passes through invisible points, one per layer in between, so that it bends
around the nodes instead of crossing them; within each layer, nodes are ordered by the mean
position of their neighbours (the barycenter heuristic), sweeping right then left a few
times and keeping the order with the fewest crossings.

Each node is a `<g>` with `data-node="<id>"` and the class `status-<status>`, holding its
id, its type, its duration and its attempts (the page's script updates these in place). Every
text is escaped: node ids, types and branch names come from users.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from markupsafe import Markup, escape

from orchestrator.definitions.spec import WorkflowSpec

NODE_W, NODE_H = 176, 66
"""The size of a node's box, in SVG units (pixels at 100 %)."""
GAP_X, GAP_Y = 64, 22
"""Room between layers (columns) and between the boxes of a layer."""
BEND_H = 12
"""The height a bend point of a long edge takes in its layer."""
MARGIN = 16
SWEEPS = 8
"""Barycenter sweeps (each right then left); drawings of workflows settle within a few."""
MAX_LABEL = 22
"""The most characters of an id or type a box shows (the whole is in its tooltip)."""


@dataclass(frozen=True)
class GraphNode:
    """A node to draw: its id, type and dependencies (`(node_id, branch or None)`)."""

    id: str
    type: str = ""
    after: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class NodeView:
    """What a node's box says about a run: its status, duration text and attempts."""

    status: str = "none"
    duration: str = ""
    attempts: int = 0


@dataclass
class Edge:
    """A dependency drawn: from `source` to `target`, through `points`, with its branch."""

    source: str
    target: str
    branch: str | None
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Layout:
    """Where every node's box goes (its top-left corner), and every edge's path."""

    boxes: dict[str, tuple[float, float]]
    edges: list[Edge]
    width: float
    height: float


def spec_nodes(spec: WorkflowSpec) -> list[GraphNode]:
    """The nodes of a workflow, with their dependencies."""
    return [GraphNode(n.id, n.type, tuple(n.dependencies())) for n in spec.nodes]


def run_nodes(spec: WorkflowSpec | None, node_ids: Iterable[str]) -> list[GraphNode]:
    """The nodes of a run, drawn with the links of `spec` between them (none without a spec,
    when the workflow was deleted); nodes the spec no longer has come last, unlinked."""
    ids = list(node_ids)
    present = set(ids)
    known = {n.id: n for n in spec_nodes(spec)} if spec is not None else {}
    nodes = [
        GraphNode(n.id, n.type, tuple(d for d in n.after if d[0] in present))
        for n in known.values()
        if n.id in present
    ]
    return nodes + [GraphNode(node_id) for node_id in ids if node_id not in known]


# -- layout ---------------------------------------------------------------------------------


def layers_of(nodes: Sequence[GraphNode]) -> dict[str, int]:
    """Each node's layer: the length of the longest path to it from a node with no
    dependencies (unknown dependencies are ignored; a cycle, which validation refuses, is
    cut where it closes)."""
    deps = {n.id: [d for d, _ in n.after if d != n.id] for n in nodes}
    layer: dict[str, int] = {}
    for start in deps:
        stack, on_path = [start], {start}
        while stack:
            node = stack[-1]
            pending = [d for d in deps[node] if d in deps and d not in layer and d not in on_path]
            if pending:
                stack.append(pending[0])
                on_path.add(pending[0])
                continue
            done = [layer[d] for d in deps[node] if d in layer]
            layer[node] = 1 + max(done) if done else 0
            on_path.discard(stack.pop())
    return layer


@dataclass
class _Grid:
    """Vertices (real nodes and bend points) by layer, and the links between adjacent layers."""

    columns: list[list[str]]
    succs: dict[str, list[str]]
    preds: dict[str, list[str]]
    bends: set[str]
    chains: list[tuple[GraphNode, str | None, list[str]]]


def _grid(nodes: Sequence[GraphNode], layer: Mapping[str, int]) -> _Grid:
    """Split every edge longer than one layer into a chain through bend points."""
    columns: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in nodes:
        columns[layer[node.id]].append(node.id)
    succs: dict[str, list[str]] = {v: [] for column in columns for v in column}
    preds: dict[str, list[str]] = {v: [] for column in columns for v in column}
    grid = _Grid(columns, succs, preds, set(), [])
    for node in nodes:
        for source, branch in dict.fromkeys(node.after):
            if source not in layer or layer[source] >= layer[node.id]:
                continue
            chain = [source]
            for between in range(layer[source] + 1, layer[node.id]):
                bend = f"\0{source}\0{node.id}\0{branch}\0{between}"  # no node id holds NUL
                columns[between].append(bend)
                grid.bends.add(bend)
                succs[bend], preds[bend] = [], []
                chain.append(bend)
            chain.append(node.id)
            for a, b in pairwise(chain):
                succs[a].append(b)
                preds[b].append(a)
            grid.chains.append((node, branch, chain))
    return grid


def crossings(upper: Sequence[str], lower: Sequence[str], succs: Mapping[str, Sequence[str]]) -> int:
    """How many edges between two adjacent layers cross (counted as inversions)."""
    where = {v: i for i, v in enumerate(lower)}
    ends = [where[w] for v in upper for w in sorted(succs[v], key=where.__getitem__) if w in where]
    seen: list[int] = []
    count = 0
    for end in ends:
        count += len(seen) - bisect.bisect_right(seen, end)
        bisect.insort(seen, end)
    return count


def _total_crossings(columns: Sequence[Sequence[str]], succs: Mapping[str, Sequence[str]]) -> int:
    return sum(crossings(a, b, succs) for a, b in pairwise(columns))


def _sweep(columns: list[list[str]], neighbours: Mapping[str, Sequence[str]], order: Iterable[int]) -> None:
    """Reorder each layer of `order` by the mean position of its vertices' neighbours in the
    layer just swept (vertices without neighbours keep their place)."""
    position = {v: float(i) for column in columns for i, v in enumerate(column)}
    for index in order:
        column = columns[index]
        keys = {}
        for place, vertex in enumerate(column):
            near = [position[n] for n in neighbours[vertex]]
            keys[vertex] = sum(near) / len(near) if near else float(place)
        column.sort(key=keys.__getitem__)
        position.update({v: float(i) for i, v in enumerate(column)})


def order_layers(grid: _Grid) -> list[list[str]]:
    """The layers reordered by barycenter sweeps; the order with fewest crossings wins."""
    columns = [list(c) for c in grid.columns]
    best, best_count = [list(c) for c in columns], _total_crossings(columns, grid.succs)
    for _ in range(SWEEPS):
        if best_count == 0:
            break
        _sweep(columns, grid.preds, range(1, len(columns)))
        _sweep(columns, grid.succs, range(len(columns) - 2, -1, -1))
        count = _total_crossings(columns, grid.succs)
        if count < best_count:
            best, best_count = [list(c) for c in columns], count
    return best


def layout(nodes: Sequence[GraphNode]) -> Layout:
    """Place the boxes and route the edges (layers left to right)."""
    grid = _grid(nodes, layers_of(nodes))
    columns = order_layers(grid)
    heights = [sum(_height(v, grid) for v in c) + GAP_Y * max(len(c) - 1, 0) for c in columns]
    tallest = max(heights, default=0)
    centre: dict[str, tuple[float, float]] = {}
    for index, column in enumerate(columns):
        x = MARGIN + index * (NODE_W + GAP_X)
        y = MARGIN + (tallest - heights[index]) / 2
        for vertex in column:
            h = _height(vertex, grid)
            centre[vertex] = (x + NODE_W / 2, y + h / 2)
            y += h + GAP_Y
    boxes = {v: (cx - NODE_W / 2, cy - NODE_H / 2) for v, (cx, cy) in centre.items() if v not in grid.bends}
    edges = []
    for node, branch, chain in grid.chains:
        first, last = centre[chain[0]], centre[chain[-1]]
        points = [(first[0] + NODE_W / 2, first[1])]
        points += [centre[bend] for bend in chain[1:-1]]
        points.append((last[0] - NODE_W / 2, last[1]))
        edges.append(Edge(chain[0], node.id, branch, points))
    width = MARGIN * 2 + len(columns) * NODE_W + GAP_X * max(len(columns) - 1, 0)
    return Layout(boxes, edges, width, MARGIN * 2 + tallest)


def _height(vertex: str, grid: _Grid) -> float:
    return BEND_H if vertex in grid.bends else NODE_H


# -- SVG ------------------------------------------------------------------------------------


def _cut(text: str, most: int = MAX_LABEL) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _path(points: Sequence[tuple[float, float]]) -> str:
    """A smooth path through `points`: one cubic curve per step, level at both ends."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    px, py = x0, y0
    for x, y in rest:
        dx = (x - px) / 2
        parts.append(f"C{px + dx:.1f},{py:.1f} {x - dx:.1f},{y:.1f} {x:.1f},{y:.1f}")
        px, py = x, y
    return " ".join(parts)


def _edge_svg(edge: Edge) -> str:
    d = _path(edge.points)
    source, target = escape(edge.source), escape(edge.target)
    svg = f'<path class="edge" d="{d}" data-from="{source}" data-to="{target}" marker-end="url(#arrow)"/>'
    if edge.branch:
        (x0, y0), (x1, y1) = edge.points[0], edge.points[1]
        x, y = (x0 + x1) / 2, (y0 + y1) / 2 - 5
        svg += f'<text class="edge-label" x="{x:.1f}" y="{y:.1f}">{escape(edge.branch)}</text>'
    return svg


def attempts_text(attempts: int) -> str:
    """`1 attempt`, `3 attempts`, or nothing before the first."""
    if attempts <= 0:
        return ""
    return f"{attempts} attempt{'s' if attempts != 1 else ''}"


def _node_svg(node: GraphNode, x: float, y: float, view: NodeView) -> str:
    node_id = escape(node.id)
    tip = escape(f"{node.id} ({node.type or 'unknown type'}): {view.status}")
    left, right, middle = x + 10, x + NODE_W - 10, x + NODE_W / 2
    return (
        f'<g class="node status-{escape(view.status)}" data-node="{node_id}" tabindex="0" role="button">'
        f"<title>{tip}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="8"/>'
        f'<text class="node-id" x="{middle:.1f}" y="{y + 20:.1f}">{escape(_cut(node.id))}</text>'
        f'<text class="node-type" x="{middle:.1f}" y="{y + 37:.1f}">{escape(_cut(node.type))}</text>'
        f'<text class="node-duration" data-field="duration" x="{left:.1f}" y="{y + 56:.1f}">'
        f"{escape(view.duration)}</text>"
        f'<text class="node-attempts" data-field="attempts" x="{right:.1f}" y="{y + 56:.1f}">'
        f"{escape(attempts_text(view.attempts))}</text>"
        "</g>"
    )


def render_svg(nodes: Sequence[GraphNode], views: Mapping[str, NodeView] | None = None) -> Markup:
    """The graph as an `<svg>` element, every node with its view (`status-none` without one)."""
    views = views or {}
    drawn = layout(nodes)
    by_id = {n.id: n for n in nodes}
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{drawn.width:.0f}" '
        f'height="{drawn.height:.0f}" viewBox="0 0 {drawn.width:.0f} {drawn.height:.0f}" '
        'role="img" aria-label="workflow graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
        *(_edge_svg(edge) for edge in drawn.edges),
        *(_node_svg(by_id[v], x, y, views.get(v, NodeView())) for v, (x, y) in drawn.boxes.items()),
        "</svg>",
    ]
    return Markup("".join(parts))
