"""Named lists that outlive runs (collections `user_lists` and `user_list_items`), for the
`user_list` node and `orchestrator lists`.

Each item is its own document, `{list, seq, item, added_at}`, under a unique index on
`(list, seq)`; the list's document `{_id: name, seq, updated_at}` hands out sequence numbers
with an atomic `$inc`. Appending is therefore an `$inc` and an insert, never a
read-modify-write of an array, so concurrent appends cannot lose items, and no `$push` of
sub-documents is needed (nx-27017 stores those as JSON strings). A node's items have ids
made from its run and node, so a redelivered node adds nothing a second time.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreError
from orchestrator.store.models import utcnow

LISTS = "user_lists"
ITEMS = "user_list_items"

DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index refusing a document

Document = dict[str, Any]


class UserLists:
    """Named, ordered lists of JSON values in one MongoDB database."""

    def __init__(self, db: Database[Document]) -> None:
        self.lists: Collection[Document] = db[LISTS]
        self.items: Collection[Document] = db[ITEMS]
        self._indexed = False

    def ensure_indexes(self) -> None:
        """The unique `(list, seq)` index that orders items and forbids duplicate numbers."""
        if self._indexed:
            return
        try:
            self.items.create_index([("list", ASCENDING), ("seq", ASCENDING)], unique=True, name="by_list")
        except PyMongoError as exc:
            raise StoreError(f"cannot create the index of {self.items.database.name}.{ITEMS}: {exc}") from exc
        self._indexed = True

    def extend(self, name: str, items: list[Any], key: str | None = None) -> int:
        """Add items at the end of list `name` (created when missing); its count afterwards.

        Args:
            key: names this write (a run's node): a second write with the same key adds
                nothing, so a node delivered again after a crash does not add its items twice.
        """
        self.ensure_indexes()
        if not items:
            self._create(name)
            return self.count(name)
        last = self._reserve(name, len(items))
        now = utcnow()
        first = last - len(items) + 1
        docs = [
            {"list": name, "seq": first + i, "item": item, "added_at": now}
            | ({"_id": f"{key}:{name}:{i}"} if key is not None else {})
            for i, item in enumerate(items)
        ]
        try:
            self.items.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if key is None or any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
        return self.count(name)

    def append(self, name: str, item: Any, key: str | None = None) -> int:
        """Add one item at the end of list `name`; its count afterwards (`key`: see `extend`)."""
        return self.extend(name, [item], key)

    def read(self, name: str) -> list[Any]:
        """The items of list `name`, oldest first (empty when the list does not exist)."""
        return [d["item"] for d in self.items.find({"list": name}, {"item": 1}).sort("seq", ASCENDING)]

    def count(self, name: str) -> int:
        """How many items list `name` holds."""
        return self.items.count_documents({"list": name})

    def clear(self, name: str) -> int:
        """Remove every item of list `name` (the list itself stays); how many were removed."""
        self._create(name)
        self.lists.update_one({"_id": name}, {"$currentDate": {"updated_at": True}})
        return self.items.delete_many({"list": name}).deleted_count

    def exists(self, name: str) -> bool:
        """Whether a list of that name was ever written."""
        return self.lists.count_documents({"_id": name}, limit=1) == 1

    def names(self) -> dict[str, int]:
        """Every list's name with its item count, by name."""
        counts = {
            d["_id"]: int(d["n"])
            for d in self.items.aggregate([{"$group": {"_id": "$list", "n": {"$sum": 1}}}])
        }
        names = [d["_id"] for d in self.lists.find({}, {"_id": 1}).sort("_id", ASCENDING)]
        return {name: counts.get(name, 0) for name in names}

    def _create(self, name: str) -> None:
        # insert with a deterministic _id: idempotent, and right on nx-27017 (no upsert needed)
        with contextlib.suppress(DuplicateKeyError):
            self.lists.insert_one({"_id": name, "seq": 0, "updated_at": utcnow()})

    def _reserve(self, name: str, n: int) -> int:
        """Reserve `n` sequence numbers for list `name`; the last one."""
        self._create(name)
        doc = self.lists.find_one_and_update(
            {"_id": name},
            {"$inc": {"seq": n}, "$currentDate": {"updated_at": True}},
            projection={"seq": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # pragma: no cover - the document was created just above
            raise StoreError(f"list '{name}' vanished while items were added to it")
        return int(doc["seq"])
