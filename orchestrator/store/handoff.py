"""What a node hands on to the node right after it in a chain, so that node reads nothing.

A node whose chain goes on with a node that does not wait (a type without `resume`) returns
a snapshot of the run document as its own end leaves it; Celery's chain gives that return
value to the next task as its argument. The snapshot is the run document without its times
and wait records: its id, workflow, status, variables, trigger and lineage, and each node's
status, output and error, with the document's size. A pure node (`NodeType.pure`) runs
from it and costs its run one update, its end; any other node marks itself `running`
without reading the document back, then ends: two updates, no read.

The nodes a run starts with (its sources) are handed a snapshot of the run's new document by
whoever launches the run (`snapshot_at_launch`), so they read nothing either.

It is built from the document the node started from plus its own end, not read back: the
nodes the next node may depend on (the ones before it in its chain, and before the chain's
start) had all ended by then, and anything that changes the run meanwhile (a cancel) is
caught by the next node's own compare-and-set. It travels as JSON text, which Celery
carries, logs and serialises cheaply whatever it holds; past `HAND_ON_MAX_BYTES` nothing
is handed on and the next node reads the document.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

import bson

from orchestrator.constants import HAND_ON_MAX_BYTES, HAND_ON_SHARED_MIN_BYTES

SIZE_KEY = "_size"
"""The snapshot's key for the document's size in BSON bytes (no run document has this key)."""

_KEPT = ("status", "output", "error")
_LEFT_OUT = frozenset(
    {
        "created_at",
        "started_at",
        "finished_at",
        "dispatched_at",
        "dispatch_claimed_at",
        "waits",
        "nodes",
        SIZE_KEY,
    }
)
_PENDING = {"status": "pending", "attempts": 0}
# A run's start turns its `started_at` from null into a date.
_STARTED = len(bson.encode({"started_at": datetime(2000, 1, 1)})) - len(bson.encode({"started_at": None}))


def snapshot_after(
    before: dict[str, Any],
    node_id: str,
    state: dict[str, Any],
    size_before: int = 0,
    keep: Collection[str] | None = None,
    max_bytes: int = HAND_ON_MAX_BYTES,
) -> str | None:
    """The snapshot, as JSON text, of the run document `before` once node `node_id` ended
    with `state`; None when it is too large to hand on.

    The size is counted up from `before`'s (`size_before` when the caller measured it),
    exactly while the nodes end from `pending` (a node that retried counts its earlier
    state twice: a little over, never under).

    Args:
        keep: the nodes the next node reads (in a wide workflow, or the nodes parallel work
            starts with): the snapshot holds only their states (a node `before` does not
            hold, the next node itself, as `pending`: its own start is a compare-and-set on
            the document).
        max_bytes: past this, nothing is handed on (nodes sharing one hand-on get less).
    """
    old = before["nodes"].get(node_id, {})
    size = (size_before or document_size(before)) + len(bson.encode({node_id: state}))
    if old.get("status") == "pending":
        size -= len(bson.encode({node_id: _PENDING}))
    if before["status"] == "pending":
        size += _STARTED
    nodes = {other: _compact(s) for other, s in before["nodes"].items()}
    nodes[node_id] = _compact(state)
    if keep is not None:
        nodes = {other: nodes.get(other, {"status": "pending"}) for other in keep}
    snapshot = {key: value for key, value in before.items() if key not in _LEFT_OUT}
    # The node's end was recorded in an active run, or it started it.
    snapshot |= {"status": "running", "nodes": nodes, SIZE_KEY: size}
    return _as_text(snapshot, max_bytes)


def snapshot_at_launch(
    doc: dict[str, Any],
    keep: Collection[str] | None = None,
    size: int = 0,
    max_bytes: int = HAND_ON_MAX_BYTES,
) -> str | None:
    """The snapshot, as JSON text, of a new run's document (`pending`, every node `pending`)
    for one of the nodes the run starts with, so that it reads nothing to start; None when
    it is larger than `max_bytes` (or not JSON).

    Args:
        keep: as for `snapshot_after`: in a wide workflow, the nodes the node reads.
        size: the document's size in BSON bytes, when the caller measured it.
    """
    nodes = {node_id: {"status": "pending"} for node_id in (doc["nodes"] if keep is None else keep)}
    # A field a new run has no value in yet (no parent, no results) is left out: read as None.
    snapshot = {key: value for key, value in doc.items() if key not in _LEFT_OUT and value is not None}
    snapshot |= {"status": "pending", "nodes": nodes, SIZE_KEY: size or document_size(doc)}
    return _as_text(snapshot, max_bytes)


def _as_text(snapshot: dict[str, Any], max_bytes: int) -> str | None:
    try:
        text = json.dumps(snapshot, separators=(",", ":"))
    except (TypeError, ValueError):  # a field that is not JSON: let the next node read
        return None
    return text if len(text) <= max_bytes else None


def hand_on_budget(sharers: int) -> int:
    """The most a snapshot handed to `sharers` nodes at once (each message carries it) may
    take: `HAND_ON_MAX_BYTES` shared, each with `HAND_ON_SHARED_MIN_BYTES` at least."""
    if sharers <= 1:
        return HAND_ON_MAX_BYTES
    return max(HAND_ON_MAX_BYTES // sharers, HAND_ON_SHARED_MIN_BYTES)


def snapshot_of(previous: Any, run_id: str) -> dict[str, Any] | None:
    """The snapshot the chain's previous task handed on, if `previous` is one of run `run_id`."""
    if not isinstance(previous, str) or not previous.startswith("{"):
        return None
    try:
        snapshot = json.loads(previous)
    except ValueError:
        return None
    if not isinstance(snapshot, dict) or snapshot.get("_id") != run_id:
        return None
    return snapshot if isinstance(snapshot.get("nodes"), dict) else None


def document_size(doc: dict[str, Any]) -> int:
    """A run document's size in BSON bytes: as a snapshot records it, or measured."""
    size = doc.get(SIZE_KEY)
    return size if isinstance(size, int) else len(bson.encode(doc))


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state[key] for key in _KEPT if state.get(key) is not None}
