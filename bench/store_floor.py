"""How much of a benchmark's time the MongoDB server needs on its own.

Every node costs its run document a start (`find_one_and_update`, returning the document, or
in a wide run the node's own state and the document's size) and an end (`update_one`), but a
pure node handed the document (by the node before it, or by the run's launch) costs the end
alone: so does a `fire_and_forget` `run_workflow` node. A child run also costs an insert, a
workflow read, its `dispatched_at` and its own node's end (which also ends the run). This
module times those
operations, one at a time, on copies of documents the benchmark itself made, so a benchmark
can print the server's share beside its result: the time the store alone needs, and the
lowest ratio to raw Celery that this store allows.

nx-27017 serves operations one after another (its throughput stays ~1,000 operations/s on a
100-node document whether one, two or four clients send them), and its cost per operation
grows with the document's size, so the sum of the operations' times is a floor for the wall
time on that server. On a real MongoDB the same operations take a fraction of a millisecond.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection

from orchestrator.engine.compiler import WIDE_NODES
from orchestrator.store.models import new_run_document
from orchestrator.store.run_store import SIZED, node_projection

Document = dict[str, Any]


def median_s(operation: Callable[[], object], repeat: int = 25) -> float:
    """The median seconds one call of `operation` takes."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        operation()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def node_start_and_end_s(runs: Collection[Document], doc: Document, node_id: str) -> tuple[float, float]:
    """Median seconds of one node's start (returning the document) and of its end, on a copy
    of the run document `doc`.

    The copy is written back unchanged each time (the node's own state), so its size stays
    the size measured; the copy is removed after.
    """
    copy_id = f"store-floor-{uuid.uuid4().hex}"
    runs.insert_one({**doc, "_id": copy_id})
    state = doc["nodes"][node_id]
    where = {"_id": copy_id, f"nodes.{node_id}.status": state["status"]}
    # As the engine starts a node: in a wide run, only what the node reads, and the size.
    projection = node_projection([node_id]) | SIZED if len(doc["nodes"]) > WIDE_NODES else None
    try:
        start = median_s(
            lambda: runs.find_one_and_update(
                where,
                {"$set": {"status": doc["status"], f"nodes.{node_id}": state}},
                projection=projection,
                return_document=ReturnDocument.BEFORE,
            )
        )
        end = median_s(lambda: runs.update_one(where, {"$set": {f"nodes.{node_id}": state}}))
    finally:
        runs.delete_one({"_id": copy_id})
    return start, end


def _over_growth(
    runs: Collection[Document], finished: Document, cost: Callable[[tuple[float, float]], float]
) -> float:
    """`cost` of a node's (start, end) times, averaged over a run document's growth: timed on
    a new run's document (every node pending) and on `finished` (every output in) as it was
    while its nodes ran (`running`, before its end wrote `results` and the rest), at its
    middle node."""
    last_node_end = {"status": "running", "results": None, "error": None, "finished_at": None}
    finished = {key: value for key, value in finished.items() if key != "results_omitted"} | last_node_end
    node_ids = sorted(finished["nodes"])
    middle = node_ids[len(node_ids) // 2]
    fresh = new_run_document(
        run_id="fresh",
        workflow=finished["workflow"],
        node_ids=node_ids,
        variables={},
        trigger={"type": "api"},
    ) | {"status": "running"}
    return (
        cost(node_start_and_end_s(runs, fresh, middle)) + cost(node_start_and_end_s(runs, finished, middle))
    ) / 2


def node_end_over_growth_s(runs: Collection[Document], finished: Document) -> float:
    """A node's end alone, averaged over a run document's growth: all a pure node that was
    handed the document costs the store."""
    return _over_growth(runs, finished, lambda times: times[1])


def insert_s(runs: Collection[Document], doc: Document) -> float:
    """Median seconds to insert a document like `doc` (a new run's document)."""
    ids: list[str] = []

    def insert() -> None:
        ids.append(f"store-floor-{uuid.uuid4().hex}")
        runs.insert_one({**doc, "_id": ids[-1]})

    try:
        return median_s(insert)
    finally:
        runs.delete_many({"_id": {"$in": ids}})


def ratio_floor(store_s: float, raw_s: float) -> float:
    """The lowest engine / raw ratio the store allows: raw Celery's time plus the store's."""
    return (raw_s + store_s) / raw_s
