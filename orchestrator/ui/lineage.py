"""A run's relatives for its page: the chain of parents up to the root, the tree of child
runs and loop iterations below it, the run it re-ran and the runs that re-ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import DESCENDING

from orchestrator.api import Orchestrator
from orchestrator.store.models import Run

Document = dict[str, Any]
BRIEF = {"_id": 1, "workflow": 1, "status": 1, "parent_run_id": 1, "created_at": 1}
"""The fields a link to another run shows."""
MAX_ANCESTORS = 64
"""Parents followed at most (runs nest `ORCH_MAX_DEPTH` deep, 8 by default)."""
MAX_RERUNS = 20


@dataclass
class Lineage:
    """The relatives of one run (`tree` is the run itself, its descendants in `children`)."""

    tree: Run
    ancestors: list[Document] = field(default_factory=list)
    """Root first, the direct parent last (id, workflow, status)."""
    rerun_of: Document | None = None
    rerun_of_id: str | None = None
    """The `rerun_of` field, even when that run is gone."""
    reruns: list[Document] = field(default_factory=list)
    """Runs whose `rerun_of` is this run, newest first."""


def ancestors(orch: Orchestrator, run: Run) -> list[Document]:
    """The run's parent, its parent's parent and so on, root first."""
    chain: list[Document] = []
    parent_id, seen = run.parent_run_id, {run.id}
    while isinstance(parent_id, str) and parent_id not in seen and len(chain) < MAX_ANCESTORS:
        seen.add(parent_id)
        doc = orch.store.runs.find_one({"_id": parent_id}, BRIEF)
        if doc is None:  # deleted: show its id, unlinked
            chain.append({"_id": parent_id, "workflow": None, "status": None, "missing": True})
            break
        chain.append(doc)
        parent_id = doc.get("parent_run_id")
    return chain[::-1]


def reruns_of(orch: Orchestrator, run_id: str, limit: int = MAX_RERUNS) -> list[Document]:
    """Runs started as re-runs of `run_id`, newest first."""
    found = orch.store.runs.find({"rerun_of": run_id}, BRIEF).sort("created_ms", DESCENDING).limit(limit)
    return list(found)


def lineage_of(orch: Orchestrator, tree: Run) -> Lineage:
    """The lineage of a run read with `Orchestrator.run_tree`."""
    rerun_of = tree.rerun_of
    original = None
    if isinstance(rerun_of, str):
        original = orch.store.runs.find_one({"_id": rerun_of}, BRIEF)
    return Lineage(
        tree=tree,
        ancestors=ancestors(orch, tree),
        rerun_of=original,
        rerun_of_id=rerun_of,
        reruns=reruns_of(orch, tree.id),
    )
