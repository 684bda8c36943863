"""Run retention: whole run trees removed once they are over, with what they left behind.

A top-level run and every run it started (its tree: the runs whose `root_run_id` is its id)
go together, with their node logs and wait records, so that nothing is left pointing into a
tree half gone. A tree in which any run is still active (a fire-and-forget child that
outlives its parent, say) is kept whole, and no active run is ever removed, even one started
in the instant between the check and the removal. Which trees go is chosen by their
top-level run: created before a cutoff, over, and, when asked, of one workflow or status.

Used by `orchestrator runs prune` and `runs delete`, by `Orchestrator.prune_runs` and
`delete_runs`, and by `orchestrator beat` when `ORCH_RETENTION_DAYS` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from orchestrator.constants import NODE_LOGS, RUN_ACTIVE, RUN_OVER
from orchestrator.errors import OrchestratorError, RunNotFound, RunStillActive
from orchestrator.store.models import epoch_ms
from orchestrator.store.node_logs import delete_logs
from orchestrator.store.run_store import RunStore

Document = dict[str, Any]
BATCH = 1000  # trees looked at (and removed) together: a bounded `$in` per query
MEMBERS_PER_QUERY = 1000  # runs removed by one query (nx-27017 turns `$in` into SQL parameters)
SAMPLE = 20  # ids of removed trees kept in the result, for a report


@dataclass
class Removed:
    """What a prune or a delete removed (or, in a dry run, would remove).

    Attributes:
        trees: top-level runs removed, each with its tree.
        runs: run documents removed, top-level ones included.
        node_logs: node attempt logs removed.
        wait_records: wait records (and the chunks of loop values beside them) removed.
        kept_active: trees that matched but were kept, a run in them being still active.
        sample: the ids of the first trees removed.
        dry_run: True when nothing was removed, only counted.
    """

    trees: int = 0
    runs: int = 0
    node_logs: int = 0
    wait_records: int = 0
    kept_active: int = 0
    sample: list[str] = field(default_factory=list)
    dry_run: bool = False

    def add(self, other: Removed) -> None:
        """Count `other`'s trees in this result."""
        self.trees += other.trees
        self.runs += other.runs
        self.node_logs += other.node_logs
        self.wait_records += other.wait_records
        self.kept_active += other.kept_active
        self.sample += other.sample[: max(SAMPLE - len(self.sample), 0)]

    def to_json(self) -> dict[str, Any]:
        """The counts and sample as plain JSON."""
        return dict(vars(self))


def prune(
    store: RunStore,
    before: datetime,
    *,
    workflow: str | None = None,
    statuses: Iterable[str] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    on_progress: Callable[[Removed, int], None] | None = None,
) -> Removed:
    """Remove the trees of top-level runs created before `before` that are over, the oldest
    first, `BATCH` trees at a time.

    Args:
        workflow: only top-level runs of this workflow.
        statuses: only top-level runs that ended so (of `finished`, `failed`, `error`,
            `cancelled`; default: all four).
        limit: look at this many top-level runs at most (the oldest first), to bound the work.
        dry_run: count what would go, remove nothing.
        on_progress: called after each batch with what is removed so far and the number of
            top-level runs found (for a progress display: 74,000 trees of a history of
            100,000 runs take 31 s on nx-27017, `bench/retention.py`).

    Raises:
        OrchestratorError: a status that is not one a run ends with.
    """
    wanted = list(statuses) if statuses is not None else list(RUN_OVER)
    if not wanted or not set(wanted) <= set(RUN_OVER):
        raise OrchestratorError(
            f"only runs that are over can be removed: statuses {', '.join(RUN_OVER)}, not {', '.join(wanted)}"
        )
    query: Document = {
        "parent_run_id": None,  # top-level runs (on `list_parent`, oldest first)
        "created_ms": {"$lt": epoch_ms(before)},
        "status": {"$in": wanted},
    }
    if workflow is not None:
        query["workflow"] = workflow
    found = store.runs.find(query, {"_id": 1}, limit=limit or 0).sort("created_ms", ASCENDING)
    roots = [str(doc["_id"]) for doc in found]
    removed = Removed(dry_run=dry_run)
    for batch in _slices(roots, BATCH):
        removed.add(_remove_trees(store, batch, dry_run))
        if on_progress is not None:
            on_progress(removed, len(roots))
    return removed


def delete(store: RunStore, run_ids: Sequence[str]) -> Removed:
    """Remove these top-level runs, each with its tree; all or none.

    Raises:
        RunNotFound: no run has one of the ids.
        OrchestratorError: one of them was started by another run (its tree's top-level
            run is the one to remove).
        RunStillActive: a run in one of the trees is still active.
    """
    roots = list(dict.fromkeys(run_ids))
    found = store.runs.find({"_id": {"$in": roots}}, {"parent_run_id": 1, "root_run_id": 1})
    docs = {doc["_id"]: doc for doc in found}
    for run_id in roots:
        doc = docs.get(run_id)
        if doc is None:
            raise RunNotFound(f"no run with id '{run_id}'")
        if doc.get("parent_run_id"):
            raise OrchestratorError(
                f"run '{run_id}' was started by run '{doc['parent_run_id']}': remove its top-level run "
                f"'{doc.get('root_run_id') or doc['parent_run_id']}' (its whole tree goes with it)"
            )
    for run_id, active in _active_by_tree(store, roots).items():
        if active:
            raise RunStillActive(
                f"run '{active[0]}' in the tree of '{run_id}' is still active: cancel it first "
                f"(orchestrator runs cancel {run_id}), then remove it"
            )
    removed = Removed()
    for batch in _slices(roots, BATCH):
        removed.add(_remove_trees(store, batch, dry_run=False))
    return removed


def _trees(store: RunStore, roots: list[str]) -> dict[str, list[Document]]:
    """Each top-level run's tree: the ids and statuses of its runs, itself included, in one
    query (on nx-27017 a `$in` of any length costs about the same: 0.2 s at 100,000 runs)."""
    trees: dict[str, list[Document]] = {root: [] for root in roots}
    for doc in store.runs.find({"root_run_id": {"$in": roots}}, {"root_run_id": 1, "status": 1}):
        trees[str(doc["root_run_id"])].append(doc)
    return trees


def _active_by_tree(store: RunStore, roots: list[str]) -> dict[str, list[str]]:
    """For each top-level run, the ids of the active runs in its tree (often none)."""
    return {
        root: [str(doc["_id"]) for doc in runs if doc.get("status") in RUN_ACTIVE]
        for root, runs in _trees(store, roots).items()
    }


def _remove_trees(store: RunStore, roots: list[str], dry_run: bool) -> Removed:
    """Remove (or count) the trees of `roots` in which every run is over."""
    trees = _trees(store, roots)
    over = [root for root in roots if all(doc.get("status") in RUN_OVER for doc in trees[root])]
    result = Removed(kept_active=len(roots) - len(over), dry_run=dry_run)
    if not over:
        return result
    members = [str(doc["_id"]) for root in over for doc in trees[root]]
    result.trees, result.sample = len(over), over[:SAMPLE]
    if dry_run:
        result.runs = len(members)
        return result
    # Records first, run documents last: a removal cut short leaves runs to remove again.
    for some in _slices(members):
        result.node_logs += delete_logs(store.db[NODE_LOGS], some)
        result.wait_records += store.wait_records.delete_of_runs(some)
    for some in _slices(members):
        gone = store.runs.delete_many({"_id": {"$in": some}, "status": {"$in": list(RUN_OVER)}})
        result.runs += int(gone.deleted_count)
    return result


def _slices(ids: list[str], size: int = MEMBERS_PER_QUERY) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
