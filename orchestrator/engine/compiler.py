"""From a node graph to a Celery canvas: chains for straight lines, groups for parallel
branches, chords for fan-in, built explicitly (no `|`, no silent chain-to-chord upgrades).

Nodes pass data through the run document, not through Celery results, so the order of
results in a chord never matters. One exception saves a MongoDB read: in a chain, a node
followed by a node that does not wait hands on a snapshot of the run document as its end
left it (`orchestrator.store.handoff`), as the chain's result; only those signatures are mutable.
Series-parallel graphs compile exactly; for the rest (an "N" shape) the compiler adds a
barrier after the graph's sources, which is correct but may start some nodes later than
strictly needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from celery import Celery, chord, group
from celery.canvas import Signature, _chain

from orchestrator.constants import (
    FINALIZE_TASK,
    HARD_LIMIT_GRACE_S,
    JOIN_TASK,
    NODE_TASK_PREFIX,
    SOFT_LIMIT_GRACE_S,
)
from orchestrator.definitions.spec import NodeSpec, WorkflowSpec
from orchestrator.definitions.template_refs import nodes_referenced
from orchestrator.engine.segments import cut
from orchestrator.store.handoff import document_size, hand_on_budget, snapshot_at_launch

Graph = dict[str, set[str]]  # node id -> ids it waits for


def node_signature(app: Celery, run_id: str, node: NodeSpec, epoch: int = 0) -> Signature:
    """The task message for one node: `workers.<type>`, with the node's own spec (and the
    run's epoch, once the reconciler has sent the run again)."""
    # What Flower and the worker's log show for the message: the run and the node, not the
    # node's whole spec (which would also travel twice in each message, as kwargs and as repr).
    options: dict[str, Any] = {"kwargsrepr": f"run {run_id}, node {node.id!r}"}
    if node.timeout_s:
        # The node's own deadline is `timeout_s`; the soft limit comes a little later, so a
        # node that honours its deadline records its failure before the limit can interrupt
        # the recording, and only a node that ignores it is stopped by the limit.
        options["soft_time_limit"] = node.timeout_s + SOFT_LIMIT_GRACE_S
        options["time_limit"] = node.timeout_s + HARD_LIMIT_GRACE_S
    kwargs: dict[str, Any] = {"run_id": run_id, "node": node.model_dump(mode="json", exclude_defaults=True)}
    if epoch:
        kwargs["epoch"] = epoch
    return app.signature(NODE_TASK_PREFIX + node.type, kwargs=kwargs, immutable=True, **options)


WIDE_NODES = 150
"""From this many nodes on, each node reads from the run document only the states of the
nodes it uses (`reads`), rather than the whole document or a snapshot of it: what a node
costs then stays the same however wide the workflow."""


def node_reads(app: Celery, node: NodeSpec) -> list[str] | None:
    """The nodes whose states a node reads: itself, its dependencies and the nodes its params
    name (`orchestrator.definitions.template_refs`); None when it reads them all (a type that sees every
    node, or a template that picks nodes at run time)."""
    registry = getattr(app, "registry", None)
    raw: frozenset[str] = frozenset()
    if registry is not None and node.type in registry:
        node_type = registry.get(node.type)
        if node_type.sees_all_nodes:
            return None
        raw = node_type.raw_params
    named = nodes_referenced(node.params, raw)
    return None if named is None else sorted({node.id, *node.dependency_ids(), *named})


def compile_workflow(
    app: Celery,
    spec: WorkflowSpec,
    run_id: str,
    handed_types: Collection[str] = frozenset(),
    epoch: int = 0,
    remaining: Collection[str] | None = None,
    digest: str | None = None,
) -> Signature:
    """The whole run as one canvas: every node, and the step that ends the run.

    That step is the task of the run's last node when the run ends with one node, so a
    run costs no task beyond its nodes; after parallel work it is a finalize task.
    `handed_types` names the node types that run from a document handed on (`hand_on`).

    Args:
        epoch, remaining: for the reconciler, the rest of a run sent again: the nodes that
            are not over yet (the others count as done), in messages of the run's new epoch.
        digest: the run's workflow version: long chains are then cut in segments
            (`orchestrator.engine.segments`), each continued from that version.
    """
    canvas = _compile(app, spec, run_id, handed_types, epoch, remaining)
    if digest is not None and remaining is None:
        cut(app, canvas, run_id, digest, epoch)
    return canvas


def _compile(
    app: Celery,
    spec: WorkflowSpec,
    run_id: str,
    handed_types: Collection[str],
    epoch: int,
    remaining: Collection[str] | None,
) -> Signature:
    nodes = {node.id: node for node in spec.nodes}
    kept = set(nodes) if remaining is None else set(remaining)
    graph: Graph = {n.id: set(n.dependency_ids()) & kept for n in spec.nodes if n.id in kept}
    sources = [node_id for node_id, deps in graph.items() if not deps]
    final = {"output": spec.output, "final_nodes": [n.id for n in spec.final_nodes()]}
    # The run's end reads the output and final nodes from the run's workflow version: in a
    # chord, its signature travels in every header message, so it carries only the run id.
    end = app.signature(
        FINALIZE_TASK, kwargs={"run_id": run_id}, immutable=True, kwargsrepr=f"run {run_id}, its end"
    )
    if not graph:  # every node is over: only the run's end is left
        return end

    wide = len(spec.nodes) > WIDE_NODES

    def leaf(node_id: str) -> Signature:
        sig = node_signature(app, run_id, nodes[node_id], epoch)
        if sources == [node_id] and remaining is None:  # the only source: its start is the run's start
            sig.kwargs["first"] = True
        if wide:
            reads = node_reads(app, nodes[node_id])
            if reads is not None:
                sig.kwargs["reads"] = reads
        return sig

    body = compile_graph(graph, leaf, lambda: app.signature(JOIN_TASK, immutable=True))
    # Engine faults are recorded by the node task's on_failure, not by an errback: an errback
    # would be copied into every message of the chain.
    last = last_node(body)
    if last is not None:  # the run ends with one node: that node's task ends the run too
        last.kwargs["final"] = final
        last.kwargs.pop("reads", None)  # it decides the run's outcome from every node
    hand_on(body, handed_predicate(app, handed_types), _upstream_reads(app, nodes))
    return body if last is not None else then(body, end)


def _upstream_reads(app: Celery, nodes: dict[str, NodeSpec]) -> Callable[[Signature], list[str] | None]:
    """The nodes whose states a node's message reads (its `reads` in a wide workflow, else
    those it uses, `node_reads`) when they are all itself or its dependencies, whose states
    are final before it starts; None otherwise (it reads the document)."""

    def upstream_reads(sig: Signature) -> list[str] | None:
        node = nodes[sig.kwargs["node"]["id"]]
        reads = sig.kwargs.get("reads")
        wanted = list(reads) if reads is not None else node_reads(app, node)
        if wanted is None or not set(wanted) <= {node.id, *node.dependency_ids()}:
            return None
        return wanted

    return upstream_reads


def handed_predicate(app: Celery, handed_types: Collection[str]) -> Callable[[Signature], bool]:
    """Whether a node's message may carry the run document handed on to it: its type is one of
    `handed_types`, or its type waits only with some params and this node cannot wait
    (`NodeType.runs_handed`: `run_workflow` with `fire_and_forget`)."""
    tasks = {NODE_TASK_PREFIX + name for name in handed_types}
    registry = getattr(app, "registry", None)

    def handed(sig: Signature) -> bool:
        if sig.task in tasks:
            return True
        type_name = str(sig.task).removeprefix(NODE_TASK_PREFIX)
        if registry is None or type_name not in registry:
            return False
        node_type = registry.get(type_name)
        return node_type.may_wait is not None and node_type.runs_handed(sig.kwargs["node"].get("params", {}))

    return handed


def hand_to_first_steps(
    app: Celery, spec: WorkflowSpec, canvas: Signature, doc: dict[str, Any], handed_types: Collection[str]
) -> None:
    """Give the nodes a new run starts with, those that may run from a handed document, a
    snapshot of the run's document `doc` as it was created (of the nodes each reads, unless
    it hands the snapshot on or ends the run), so that none reads the document to start.
    Many first nodes share the budget of one hand-on (`hand_on_budget`); past it a node
    reads.

    Only for the canvas of a run just created from `doc`, before anything else ran."""
    handed = handed_predicate(app, handed_types)
    firsts = [sig for sig in first_steps(canvas) if handed(sig)]
    if not firsts:
        return
    budget = hand_on_budget(len(firsts))
    size = document_size(doc)
    nodes = {node.id: node for node in spec.nodes}
    for sig in firsts:
        snapshot = snapshot_at_launch(doc, _launch_keep(app, sig, nodes), size, budget)
        if snapshot is not None:
            sig.args = (snapshot,)
            sig.set(argsrepr="(the run document as it was created)")


def _launch_keep(app: Celery, sig: Signature, nodes: dict[str, NodeSpec]) -> list[str] | None:
    """The nodes whose states a first node's launch snapshot holds: in a wide workflow those
    it reads; otherwise those too, unless the node hands the snapshot on (the next node may
    read any) or ends the run (it decides from every node): then all (None)."""
    if sig.kwargs.get("reads") is not None:
        return list(sig.kwargs["reads"])
    if sig.kwargs.get("hand_on") or sig.kwargs.get("final") is not None:
        return None
    return node_reads(app, nodes[sig.kwargs["node"]["id"]])


def first_steps(sig: Signature) -> Iterator[Signature]:
    """The node signatures a canvas starts with: those that no step comes before (the
    graph's sources), which take no previous result."""
    if isinstance(sig, chord | group):
        for member in sig.tasks:
            yield from first_steps(member)
    elif isinstance(sig, _chain):
        yield from first_steps(sig.tasks[0])
    elif _is_node(sig):
        yield sig


def last_node(sig: Signature) -> Signature | None:
    """The node signature a canvas ends with, or None when it ends with parallel work."""
    if isinstance(sig, chord):
        return last_node(sig.body)
    if isinstance(sig, group):
        return None
    if isinstance(sig, _chain):
        return last_node(sig.tasks[-1])
    return sig if sig.task.startswith(NODE_TASK_PREFIX) else None


def hand_on(
    sig: Signature,
    handed: Callable[[Signature], bool],
    upstream_reads: Callable[[Signature], list[str] | None],
) -> None:
    """In every chain of the canvas, let a node hand the run document on to the node right
    after it, when that one may run from it (`handed`): the node returns it (`hand_on`),
    the next one takes it as its argument.

    In a wide workflow (nodes with `reads`), what is handed on holds only the nodes the next
    node reads (`hand_on` is their list), and only when the node has them all: the next node
    reads only nodes the one before it read, or that one itself (a line: its dependency).
    A node followed by parallel work hands on to the nodes that work starts with
    (`_hand_to_members`).
    """
    if isinstance(sig, group | chord):
        for member in sig.tasks:
            hand_on(member, handed, upstream_reads)
    if isinstance(sig, chord):
        hand_on(sig.body, handed, upstream_reads)
    if not isinstance(sig, _chain):
        return
    for member in sig.tasks:
        hand_on(member, handed, upstream_reads)
    for node, after in itertools.pairwise(sig.tasks):
        if _is_node(node) and isinstance(after, group | chord):
            _hand_to_members(node, after, handed, upstream_reads)
        elif _is_node(node) and _is_node(after) and handed(after):
            kept = _handed(node.kwargs, after.kwargs)
            if kept is None:
                continue
            node.kwargs["hand_on"] = kept
            after.set_immutable(False)
            after.set(argsrepr="(the run document the node before handed on)")


def _hand_to_members(
    node: Signature,
    work: Signature,
    handed: Callable[[Signature], bool],
    upstream_reads: Callable[[Signature], list[str] | None],
) -> None:
    """Let a node followed by parallel work (a group, or a chord's header) hand the run
    document on to the nodes that work starts with: Celery gives each of them the node's
    result. Each gets the same snapshot, so it holds only the states those nodes read
    (never every node: it travels once per node). Only nodes that read nothing but their
    dependencies (all over before the node hands on) and themselves, and in a wide workflow
    only states the node has, take it (`hand_to` says how many, for the snapshot's budget);
    the others read the document."""
    has = None if node.kwargs.get("reads") is None else {*node.kwargs["reads"], node.kwargs["node"]["id"]}
    takers, kept = [], set()
    for member in first_steps(work):
        wanted = upstream_reads(member) if handed(member) else None
        if wanted is None:
            continue
        others = set(wanted) - {member.kwargs["node"]["id"]}
        if has is None or others <= has:
            takers.append(member)
            kept |= others
    if not takers:
        return
    node.kwargs["hand_on"] = sorted(kept | {node.kwargs["node"]["id"]})
    if len(takers) > 1:
        node.kwargs["hand_to"] = len(takers)
    for member in takers:
        member.set_immutable(False)
        member.set(argsrepr="(the run document the node before handed on)")


def _handed(node: dict[str, Any], after: dict[str, Any]) -> bool | list[str] | None:
    """What a node hands on to the node after it: the whole snapshot (True), the states of
    the nodes the next one reads (their list), or nothing (None) when it has not read them."""
    reads, wanted = node.get("reads"), after.get("reads")
    if wanted is None:  # the next node reads every node: only a node that read them all has them
        return True if reads is None else None
    if reads is None:
        return list(wanted)
    has = {*reads, node["node"]["id"]}
    next_id = after["node"]["id"]
    return list(wanted) if all(n in has for n in wanted if n != next_id) else None


def _is_node(sig: Signature) -> bool:
    return not isinstance(sig, group | chord | _chain) and str(sig.task).startswith(NODE_TASK_PREFIX)


def compile_graph(graph: Graph, leaf: Callable[[str], Signature], join: Callable[[], Signature]) -> Signature:
    """The canvas for the nodes of `graph` (dependencies outside it count as done)."""
    ids = sorted(graph)  # a stable order; the spec was checked for cycles when loaded
    if len(ids) == 1:
        return leaf(ids[0])
    components = _components(graph)
    if len(components) > 1:
        return group([close(compile_graph(_sub(graph, c), leaf, join), join) for c in components])
    sources = [n for n in ids if not graph[n]]
    if len(sources) == 1:
        line, rest = _line_from(graph, sources[0])
        return then(_chain(*[leaf(n) for n in line]), compile_graph(rest, leaf, join))
    sinks = [n for n in ids if not any(n in graph[m] for m in ids)]
    if len(sinks) == 1:
        return then(compile_graph(_without(graph, sinks), leaf, join), leaf(sinks[0]))
    # Not series-parallel at this level: a barrier after the sources keeps it correct.
    return then(
        compile_graph(_sub(graph, sources), leaf, join), compile_graph(_without(graph, sources), leaf, join)
    )


def then(first: Signature, second: Signature) -> Signature:
    """`second` after `first`, built explicitly: what ends in a group becomes a chord, what
    ends in a chord gets `second` appended to the chord's body, anything else a flat chain."""
    if isinstance(first, group):
        return chord(first.tasks, second)
    if isinstance(first, chord):
        return chord(first.tasks, then(first.body, second))
    if isinstance(first, _chain) and isinstance(first.tasks[-1], group | chord):
        return _chain(*first.tasks[:-1], then(first.tasks[-1], second))
    head = list(first.tasks) if isinstance(first, _chain) else [first]
    tail = list(second.tasks) if isinstance(second, _chain) else [second]
    return _chain(*head, *tail)


def close(sig: Signature, join: Callable[[], Signature]) -> Signature:
    """A group member that ends when all its work ends: a trailing group gets a join step."""
    if isinstance(sig, _chain) and isinstance(sig.tasks[-1], group):
        return then(sig, join())
    return sig


def _line_from(graph: Graph, source: str) -> tuple[list[str], Graph]:
    """The straight line of nodes from the graph's only source, and the graph after it.

    Peeled in a loop, not by recursion, so that long lines compile in linear time and never
    reach Python's recursion limit. The rest keeps at least one node.
    """
    dependents: dict[str, set[str]] = {n: set() for n in graph}
    for n, deps in graph.items():
        for dep in deps:
            dependents[dep].add(n)
    rest = {n: set(deps) for n, deps in graph.items()}
    line = [source]
    while True:
        del rest[source]
        for m in dependents[source]:
            rest[m].discard(source)
        freed = sorted(m for m in dependents[source] if not rest[m])
        if len(rest) < 2 or len(freed) != 1:
            return line, rest
        source = freed[0]
        line.append(source)


def _components(graph: Graph) -> list[set[str]]:
    neighbours: dict[str, set[str]] = {n: set(deps) for n, deps in graph.items()}
    for n, deps in graph.items():
        for dep in deps:
            neighbours[dep].add(n)
    components: list[set[str]] = []
    seen: set[str] = set()
    for start in sorted(graph):
        if start in seen:
            continue
        component, frontier = {start}, [start]
        while frontier:
            for other in neighbours[frontier.pop()] - component:
                component.add(other)
                frontier.append(other)
        seen |= component
        components.append(component)
    return components


def _sub(graph: Graph, keep: Iterable[str]) -> Graph:
    kept = set(keep)
    return {n: deps & kept for n, deps in graph.items() if n in kept}


def _without(graph: Graph, drop: Iterable[str]) -> Graph:
    return _sub(graph, set(graph) - set(drop))
