"""Run history: runs filtered and paged newest first, on indexes, for the CLI, the API and the UI.

A page is read with a keyset cursor (the `created_ms` and `_id` of the last run shown), never
with `skip`: the next page costs what the first does, at 100,000 runs as at 10. Every filter
combination is served by an index whose keys end with `created_ms, _id` (`INDEXES`), so a
page is a walk down an index, not a sort of every matching run. Runs are keyed by integer
milliseconds (`created_ms`), not by the `created_at` date: nx-27017 compares dates to the
second only. The next page is two queries (the rest of the last run's millisecond, then
what is older), each an index range, rather than one `$or`, which nx-27017 runs as a scan.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from orchestrator.constants import RUN_STATUSES
from orchestrator.errors import OrchestratorError
from orchestrator.store.models import Run, epoch_ms

Document = dict[str, Any]
MAX_PAGE = 10_000
NEWEST_FIRST = [("created_ms", DESCENDING), ("_id", DESCENDING)]

# name -> keys: each list or tree query of the CLI, API and UI has one whose keys are its
# equality filters followed by the sort (`created_ms`, `_id`, newest first); a tree's runs
# are found on the same keys and put in order after (`oldest_first`). Every index costs every
# write of a run document, so queries share one where they can (a run's children are read
# on `list_parent`).
INDEXES: dict[str, list[tuple[str, int]]] = {
    "list_newest": [("created_ms", DESCENDING), ("_id", DESCENDING)],
    "list_workflow": [("workflow", ASCENDING), ("created_ms", DESCENDING), ("_id", DESCENDING)],
    "list_status": [("status", ASCENDING), ("created_ms", DESCENDING), ("_id", DESCENDING)],
    "list_workflow_status": [
        ("workflow", ASCENDING),
        ("status", ASCENDING),
        ("created_ms", DESCENDING),
        ("_id", DESCENDING),
    ],
    "list_trigger": [("trigger.type", ASCENDING), ("created_ms", DESCENDING), ("_id", DESCENDING)],
    "list_parent": [("parent_run_id", ASCENDING), ("created_ms", DESCENDING), ("_id", DESCENDING)],
    "list_rerun_of": [("rerun_of", ASCENDING), ("created_ms", DESCENDING)],
    "tree_root_ms": [("root_run_id", ASCENDING), ("created_ms", DESCENDING), ("_id", DESCENDING)],
    "children_of_node": [("parent_run_id", ASCENDING), ("parent_node_id", ASCENDING), ("status", ASCENDING)],
}


def oldest_first(runs: Iterable[Run]) -> list[Run]:
    """`runs` by creation, oldest first; runs of the same millisecond (a loop's iterations,
    say) by their ids with numbers compared as numbers (`.9` before `.10`)."""
    return sorted(runs, key=lambda run: (epoch_ms(run.created_at), _natural(run.id)))


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key for `text` that compares its runs of digits by value."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part)


class BadFilter(OrchestratorError):
    """A filter or cursor that cannot be used (a status that does not exist, a cursor cut)."""


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list; every field optional, all given ones must hold.

    Attributes:
        workflow: the workflow's name, exactly.
        status: one run status (`pending`, `running`, `finished`, …).
        trigger: how runs were started (`api`, `cli`, `schedule`, `run_workflow`, `rerun`…).
        parent: the id of the run whose nodes started them (its child runs).
        text: text the run id contains, anywhere (case-insensitive).
        since, until: created at or after, before.
        roots_only: only runs that no other run started.
    """

    workflow: str | None = None
    status: str | None = None
    trigger: str | None = None
    parent: str | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    roots_only: bool = False

    def __post_init__(self) -> None:
        for name in ("workflow", "status", "trigger", "parent", "text"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise BadFilter(f"the '{name}' filter must be text, not {type(value).__name__}")
        if self.status and self.status not in RUN_STATUSES:
            raise BadFilter(f"no run status '{self.status}' (statuses: {', '.join(RUN_STATUSES)})")

    def query(self) -> Document:
        """The MongoDB filter (only equality, ranges and an escaped regex: no operator a user
        could smuggle in)."""
        query: Document = {}
        if self.workflow:
            query["workflow"] = self.workflow
        if self.status:
            query["status"] = self.status
        if self.trigger:
            query["trigger.type"] = self.trigger
        if self.parent:
            query["parent_run_id"] = self.parent
        elif self.roots_only:
            query["parent_run_id"] = None
        if self.text and self.text.strip():
            # Anywhere in the id: no index serves that, so the server reads every run's id
            # (a prefix range would be an index walk, but would miss the middle of an id).
            query["_id"] = {"$regex": re.escape(self.text.strip()), "$options": "i"}
        times: Document = {}
        if self.since:
            times["$gte"] = epoch_ms(self.since)
        if self.until:
            times["$lt"] = epoch_ms(self.until)
        if times:
            query["created_ms"] = times
        return query

    def without_status(self) -> RunFilter:
        """The same filter for every status (to count runs by status)."""
        return replace(self, status=None)


@dataclass
class RunPage:
    """One page of runs, newest first, and the cursor of the next page (None at the end)."""

    runs: list[Run] = field(default_factory=list)
    next_cursor: str | None = None


def encode_cursor(doc: Document) -> str:
    """The cursor after the run document `doc`: its `created_ms` and id, URL-safe."""
    millis = doc.get("created_ms")
    if not isinstance(millis, int):  # a run stored before `created_ms` existed
        millis = epoch_ms(doc["created_at"])
    return base64.urlsafe_b64encode(f"{millis}:{doc['_id']}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The creation time (ms) and id a cursor holds; `BadFilter` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        millis, run_id = raw.split(":", 1)
        return int(millis), run_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadFilter(
            f"'{cursor[:40]}' is not a cursor of this list (take `next_cursor` as given)"
        ) from exc


def page_runs(
    runs: Collection[Document], where: RunFilter, limit: int = 50, cursor: str | None = None
) -> RunPage:
    """A page of runs matching `where`, newest first, after `cursor`."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadFilter(f"a page holds 1 to {MAX_PAGE} runs, not {limit}")
    query = where.query()
    if cursor:
        millis, run_id = decode_cursor(cursor)
        # The rest of the last run's millisecond: a handful of runs, read whole and cut here
        # (nx-27017 answers a range on `_id` next to it with a scan).
        same_ms = _narrowed(query, "created_ms", {"$gte": millis, "$lte": millis})
        docs = [d for d in runs.find(same_ms).sort(NEWEST_FIRST) if d["_id"] < run_id][: limit + 1]
        older = _narrowed(query, "created_ms", {"$lt": millis})
        if len(docs) <= limit:
            docs += list(runs.find(older).sort(NEWEST_FIRST).limit(limit + 1 - len(docs)))
    else:
        docs = list(runs.find(query).sort(NEWEST_FIRST).limit(limit + 1))
    page = RunPage([Run.model_validate(d) for d in docs[:limit]])
    if len(docs) > limit:
        page.next_cursor = encode_cursor(docs[limit - 1])
    return page


def _narrowed(query: Document, key: str, bounds: Document) -> Document:
    """`query` with `key` also within `bounds` (`$lt`, `$lte`, `$gte`): the tighter bound wins."""
    existing = query.get(key)
    merged: Document = dict(existing) if isinstance(existing, dict) else {}
    if existing is not None and not isinstance(existing, dict):
        merged = {"$gte": existing, "$lte": existing}
    for op, value in bounds.items():
        if op not in merged:
            merged[op] = value
        elif op in ("$lt", "$lte"):
            merged[op] = min(merged[op], value)
        else:
            merged[op] = max(merged[op], value)
    return {**query, key: merged}


def count_by_status(runs: Collection[Document], where: RunFilter) -> dict[str, int]:
    """How many runs match `where` in each status (every status present, zeros included)."""
    base = where.without_status().query()
    counts: dict[str, int] = dict.fromkeys(RUN_STATUSES, 0)
    if where.text:
        # A regex in `$match` sends nx-27017 (the embedded server) to its slow path, five
        # times a find's time (9 s at 100,000 runs): count the statuses a find returns.
        for doc in runs.find(base, {"status": 1, "_id": 0}):
            if doc.get("status") in counts:
                counts[doc["status"]] += 1
        return counts
    for row in runs.aggregate([{"$match": base}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
        if row["_id"] in counts:
            counts[row["_id"]] = int(row["n"])
    return counts


LEGACY_INDEXES = ("by_parent", "by_workflow", "by_status", "by_root", "tree_parent", "tree_root")
"""Indexes of earlier versions that those of `INDEXES` replace."""


def ensure_history_indexes(runs: Collection[Document], names: Iterable[str] | None = None) -> None:
    """Create the indexes of `INDEXES` (all, or those named), and drop those they replace."""
    with_id = _indexes_id(runs)
    for name in names or INDEXES:
        keys = INDEXES[name] if with_id else [key for key in INDEXES[name] if key[0] != "_id"]
        runs.create_index(keys, name=name)
    existing = set(runs.index_information())
    for name in LEGACY_INDEXES:
        if name in existing:
            runs.drop_index(name)


def _indexes_id(runs: Collection[Document]) -> bool:
    """Whether the server can hold `_id` in a compound index. nx-27017 (the suite's server)
    accepts such an index and then refuses every insert; there the other keys serve the
    query, and `_id` only orders runs created in the same millisecond."""
    return runs.database.client.admin.command("buildInfo").get("process") != "nx_27017"
