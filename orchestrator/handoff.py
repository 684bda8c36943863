"""What a node hands on to a pure node right after it in a chain, so that node reads nothing.

A node whose chain goes on with a pure node (`NodeType.pure`) returns a snapshot of the run
document as its own end leaves it; Celery's chain gives that return value to the next task as
its argument. The snapshot is what a pure node runs from: the run's id, workflow, status and
variables, and each node's status, output and error, with the document's size in bytes.

It is built from the document the node started from plus its own end, not read back: the
nodes a pure node may depend on (the ones before it in its chain, and before the chain's
start) had all ended by then, and anything that changes the run meanwhile (a cancel) is
caught by the pure node's own compare-and-set. It travels as JSON text, which Celery
carries, logs and serialises cheaply whatever it holds; past `HAND_ON_MAX_BYTES` nothing
is handed on and the next node reads the document.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import bson

from orchestrator.constants import HAND_ON_MAX_BYTES

SIZE_KEY = "_size"
"""The snapshot's key for the document's size in BSON bytes (no run document has this key)."""

_KEPT = ("status", "output", "error")
_PENDING = {"status": "pending", "attempts": 0}
# A run's start turns its `started_at` from null into a date.
_STARTED = len(bson.encode({"started_at": datetime(2000, 1, 1)})) - len(bson.encode({"started_at": None}))


def snapshot_after(before: dict[str, Any], node_id: str, state: dict[str, Any]) -> str | None:
    """The snapshot, as JSON text, of the run document `before` once node `node_id` ended
    with `state`; None when it is too large to hand on.

    The size is counted up from `before`'s, exactly while the nodes end from `pending`
    (a node that retried counts its earlier state twice: a little over, never under).
    """
    old = before["nodes"].get(node_id, {})
    size = document_size(before) + len(bson.encode({node_id: state}))
    if old.get("status") == "pending":
        size -= len(bson.encode({node_id: _PENDING}))
    if before["status"] == "pending":
        size += _STARTED
    nodes = {other: _compact(s) for other, s in before["nodes"].items()}
    nodes[node_id] = _compact(state)
    snapshot = {
        "_id": before["_id"],
        "workflow": before["workflow"],
        "status": "running",  # the node's end was recorded in an active run, or it started it
        "variables": before.get("variables", {}),
        "nodes": nodes,
        SIZE_KEY: size,
    }
    text = json.dumps(snapshot, separators=(",", ":"))
    return text if len(text) <= HAND_ON_MAX_BYTES else None


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
