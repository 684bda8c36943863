"""Wait records: what each waiting node waits for, one document per node, out of its run.

A waiting node (`orchestrator.engine.waiting`) keeps its record in the `waits` collection under
`<run>/<node>`: what it waits for and until when, its poll token, whether a wake-up is in
flight, and the message that continues it (its re-send signature). Kept out of the run
document, a record costs its run nothing: a parent of 2,000 waiting nodes has a document of
2,000 node states, not 2,000 records, and every record is read and written by its id alone.

The token is passed on by compare-and-set on the record, as it was inside the run; the node's
status stays in the run (`nodes.<id>.status`), which the claim that ends the wait sets. A
record is marked `over` when its wait ends (claimed, cancelled, or found stale by the
sweeper), and kept, as the run's history of its waits.

A node that waits on a long list (a `parameter_loop`'s values) keeps the list beside its
record, in `wait_items`, in chunks of `ITEMS_PER_CHUNK`: a poll reads the record alone, and
the node reads the slice it needs when it needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bson
from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection

from orchestrator.errors import DocumentTooLarge

Document = dict[str, Any]
ITEMS_PER_CHUNK = 1000
RESEND_ONLY = {"resend": 1}


def record_id(run_id: str, node_id: str) -> str:
    """The `_id` of a node's wait record."""
    return f"{run_id}/{node_id}"


class WaitRecords:
    """The `waits` collection."""

    def __init__(self, waits: Collection[Document], max_bytes: int, items: Collection[Document]) -> None:
        self.waits = waits
        self.max_bytes = max_bytes
        self.wait_items = items

    def ensure_indexes(self) -> None:
        """The sweeper's query (records not over, by next poll) and a run's records."""
        self.waits.create_index([("over", ASCENDING), ("next_poll_at", ASCENDING)], name="by_next_poll")
        self.waits.create_index([("of_run", ASCENDING)], name="by_run")
        self.wait_items.create_index([("of_run", ASCENDING)], name="by_run")

    def delete_of_runs(self, run_ids: list[str]) -> int:
        """Remove the records (and their chunks of values) of nodes of these runs; how many
        records were removed."""
        self.wait_items.delete_many({"of_run": {"$in": run_ids}})
        return int(self.waits.delete_many({"of_run": {"$in": run_ids}}).deleted_count)

    def check_size(self, node_id: str, record: Document) -> None:
        """Refuse a record past the size budget (what a node type keeps while it waits).

        Raises:
            DocumentTooLarge: naming the node and the record's size.
        """
        size = len(bson.encode(record))
        if size > self.max_bytes:
            raise DocumentTooLarge(
                f"node '{node_id}' would wait with a record of {size / 1024:.0f} KiB, past the "
                f"{self.max_bytes / 1024:.0f} KiB limit (ORCH_MAX_RUN_DOC_BYTES)"
            )

    def put(self, run_id: str, node_id: str, record: Document) -> None:
        """Store a node's record (replacing one of an earlier attempt)."""
        # `run_id` in a record is the run awaited; the waiting node's run and id are `of_*`.
        key = record_id(run_id, node_id)  # in the document too: nx-27017's upsert ignores the filter's
        doc = {**record, "_id": key, "of_run": run_id, "of_node": node_id, "over": False}
        self.waits.replace_one({"_id": key}, doc, upsert=True)

    def get(self, run_id: str, node_id: str) -> Document | None:
        """A node's record, or None."""
        return self.waits.find_one({"_id": record_id(run_id, node_id)})

    def pass_token(self, run_id: str, node_id: str, held: str | None, new: str, next_poll_at: float) -> bool:
        """Hand the poll token from the message holding it to the next one; False when `held`
        is not current (a wake-up superseded it) or the wait is over."""
        result = self.waits.update_one(
            {"_id": record_id(run_id, node_id), "token": held, "over": False},
            {"$set": {"token": new, "woken": False, "next_poll_at": next_poll_at}},
        )
        return result.modified_count == 1

    def take_token(
        self, run_id: str, node_id: str, token: str, overdue_before: float | None = None
    ) -> Document | None:
        """Give the poll token to a wake-up message; the record after, or None.

        Without `overdue_before`, only when no wake-up is in flight already; with it, only
        when the next poll was due before that time (epoch seconds).
        """
        query: Document = {"_id": record_id(run_id, node_id), "over": False}
        if overdue_before is None:
            query["woken"] = False
        else:
            query["next_poll_at"] = {"$lt": overdue_before}
        return self.waits.find_one_and_update(
            query,
            {"$set": {"token": token, "woken": True}},
            projection=RESEND_ONLY,  # all a wake-up sends: not the record's data, whatever its size
            return_document=ReturnDocument.AFTER,
        )

    def take_over(
        self, run_id: str, node_id: str, epoch: int, resend: Document, token: str
    ) -> Document | None:
        """Give the wait to a message of the run's epoch `epoch`; the record after, or None
        when it is not one of an older epoch any more."""
        return self.waits.find_one_and_update(
            {"_id": record_id(run_id, node_id), "over": False, "epoch": {"$ne": epoch}},
            {"$set": {"resend": resend, "token": token, "woken": False, "epoch": epoch}},
            return_document=ReturnDocument.AFTER,
        )

    def close(self, run_id: str, node_id: str) -> None:
        """Mark a wait over (its node was claimed or cancelled)."""
        self.waits.update_one({"_id": record_id(run_id, node_id)}, {"$set": {"over": True}})

    def set_data(self, run_id: str, node_id: str, data: Document) -> None:
        """Replace what a node keeps to resume (`data`), as a node type upgrades an older record."""
        self.waits.update_one({"_id": record_id(run_id, node_id)}, {"$set": {"data": data}})

    def put_items(self, run_id: str, node_id: str, items: list[Any]) -> None:
        """Keep a node's long list beside its record, in chunks (replacing an earlier attempt's)."""
        prefix = record_id(run_id, node_id)
        for chunk, start in enumerate(range(0, len(items), ITEMS_PER_CHUNK)):
            key = f"{prefix}/{chunk}"
            doc = {"_id": key, "of_run": run_id, "of_node": node_id, "chunk": chunk}
            doc["items"] = items[start : start + ITEMS_PER_CHUNK]
            self.wait_items.replace_one({"_id": key}, doc, upsert=True)

    def items(self, run_id: str, node_id: str, start: int, stop: int) -> list[Any]:
        """Items `start` to `stop` (excluded) of the list kept by `put_items`, reading only the
        chunks that hold them.

        Raises:
            LookupError: a chunk is missing (the list was not kept, or was removed).
        """
        if stop <= start:
            return []
        first, last = start // ITEMS_PER_CHUNK, (stop - 1) // ITEMS_PER_CHUNK
        prefix = record_id(run_id, node_id)
        keys = [f"{prefix}/{chunk}" for chunk in range(first, last + 1)]
        found = {doc["chunk"]: doc["items"] for doc in self.wait_items.find({"_id": {"$in": keys}})}
        if len(found) != len(keys):
            raise LookupError(f"the list kept by node '{node_id}' of run {run_id} is missing chunks")
        joined = [item for chunk in range(first, last + 1) for item in found[chunk]]
        offset = first * ITEMS_PER_CHUNK
        return joined[start - offset : stop - offset]

    def overdue(self, before: float) -> Iterator[tuple[str, str]]:
        """`(run_id, node_id)` of the waits not over whose next poll was due before `before`."""
        query = {"over": False, "next_poll_at": {"$lt": before}}
        for doc in self.waits.find(query, {"of_run": 1, "of_node": 1}):
            yield str(doc["of_run"]), str(doc["of_node"])
