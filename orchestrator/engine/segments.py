"""Long chains in segments, so that a message never carries more than a few steps.

A Celery chain travels whole: each message carries the rest of its chain, so a line of N
nodes costs O(N²) bytes of messages, and a chord's body is copied into every header message.
The compiler cuts every chain longer than `SEGMENT_NODES` (`cut`): the chain keeps its first
steps and ends with a continuation message (`CONTINUE_TASK`) naming the run, its workflow
version and the node the rest starts with. The continuation, on a worker, compiles the run's
canvas again from that version (once per process and run: `TailCache`), takes the rest of
that chain, cuts it the same way, and replaces itself with it (`Task.replace`, which keeps
its place in the chain or chord around it). Per node, a message then carries at most
`SEGMENT_NODES` steps whatever the workflow's width or length.

Only canvases of a run's first sending are cut (they are compiled from the workflow version
the run records); the rest of a run that the reconciler sends again is sent whole.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from celery import Celery, chord, group
from celery.canvas import Signature, _chain

from orchestrator.constants import CONTINUE_TASK

SEGMENT_NODES = 12
"""The most steps a chain keeps before its continuation (a node, a group or a chord is a step)."""
CACHE_RUNS = 8


def first_node(sig: Signature) -> str | None:
    """The id of the first node a step starts with (a group's: its first member's)."""
    if isinstance(sig, _chain | group | chord):
        return first_node(sig.tasks[0]) if sig.tasks else None
    node = sig.kwargs.get("node") if isinstance(sig.kwargs, dict) else None
    return node.get("id") if isinstance(node, dict) else None


def continuation(app: Celery, run_id: str, digest: str, from_node: str, epoch: int = 0) -> Signature:
    """The message that sends the rest of a chain, from the step that starts with `from_node`."""
    kwargs: dict[str, str | int] = {"run_id": run_id, "digest": digest, "from_node": from_node}
    if epoch:
        kwargs["epoch"] = epoch
    return app.signature(
        CONTINUE_TASK,
        kwargs=kwargs,
        immutable=True,
        kwargsrepr=f"run {run_id}, the chain from node {from_node!r}",
    )


def cut(
    app: Celery, sig: Signature, run_id: str, digest: str, epoch: int = 0, size: int = SEGMENT_NODES
) -> Signature:
    """Cut, in place, every chain of the canvas longer than `size` steps; the canvas."""
    if isinstance(sig, group | chord):
        for member in sig.tasks:
            cut(app, member, run_id, digest, epoch, size)
    if isinstance(sig, chord):
        cut(app, sig.body, run_id, digest, epoch, size)
    if not isinstance(sig, _chain):
        return sig
    steps = list(sig.tasks)
    if len(steps) > size:
        key = first_node(steps[size - 1])
        if key is not None:
            # The node before hands its snapshot on to the continuation, which passes it to
            # the rest's first node (`hand_over`) when that one takes it.
            follow = continuation(app, run_id, digest, key, epoch)
            follow.set_immutable(not steps[size - 2].kwargs.get("hand_on"))
            steps = [*steps[: size - 1], follow]
            sig.tasks = steps
    for step in steps:
        cut(app, step, run_id, digest, epoch, size)
    return sig


def tail_from(canvas: Signature, from_node: str) -> Signature | None:
    """A copy of the rest of the chain of `canvas` whose step (past its first) starts with
    `from_node`; None when there is none."""
    if isinstance(canvas, group | chord):
        members = [*canvas.tasks, canvas.body] if isinstance(canvas, chord) else list(canvas.tasks)
        for member in members:
            found = tail_from(member, from_node)
            if found is not None:
                return found
        return None
    if not isinstance(canvas, _chain):
        return None
    steps = list(canvas.tasks)
    for index, step in enumerate(steps):
        if index and first_node(step) == from_node:
            rest = [s.clone() for s in steps[index:]]
            return rest[0] if len(rest) == 1 else _chain(*rest)
        found = tail_from(step, from_node)
        if found is not None:
            return found
    return None


def hand_over(rest: Signature, previous: object) -> Signature:
    """The rest of a chain, its first node given the snapshot the node before the
    continuation handed on (`previous`) when it takes one, else nothing."""
    first = rest.tasks[0] if isinstance(rest, _chain) else rest
    if isinstance(first, _chain | group | chord):
        return rest
    if not first.immutable and isinstance(previous, str):
        first.args = (previous,)
    else:
        first.set(argsrepr="()")
    first.set_immutable(True)  # its argument is set here: nothing is appended by the chain
    return rest


class TailCache:
    """The whole canvases of the runs this process continued lately, compiled once each."""

    def __init__(self, compile_run: Callable[[str, str, int], Signature]) -> None:
        self._compile = compile_run
        self._canvases: OrderedDict[tuple[str, str, int], Signature] = OrderedDict()
        self._lock = threading.Lock()

    def canvas(self, run_id: str, digest: str, epoch: int) -> Signature:
        """The run's whole canvas, uncut (compiled by `compile_run(run_id, digest, epoch)`)."""
        key = (run_id, digest, epoch)
        with self._lock:
            found = self._canvases.get(key)
            if found is not None:
                self._canvases.move_to_end(key)
                return found
        canvas = self._compile(run_id, digest, epoch)
        with self._lock:
            self._canvases[key] = canvas
            while len(self._canvases) > CACHE_RUNS:
                self._canvases.popitem(last=False)
        return canvas
