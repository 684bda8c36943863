"""The run store: run documents and workflow definitions in MongoDB.

Every status change is a compare-and-set (`find_one_and_update` / `update_one` with the
expected status in the filter), so a redelivered or duplicated task cannot move a run or a
node backwards or finish it twice. Only operations that real MongoDB and nx-27017 both do
right are used: whole sub-documents for anything holding a datetime, `$currentDate` for
top-level times, no `$push` of sub-documents, no upsert through `find_one_and_update`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import bson
from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.constants import (
    NODE_ENDABLE,
    NODE_LOGS,
    NODE_STARTABLE,
    RUN_ACTIVE,
    RUN_OVER,
    RUNS,
    WAIT_ITEMS,
    WAITS,
    WORKFLOW_VERSIONS,
    WORKFLOWS,
    RunStatus,
)
from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.errors import DocumentTooLarge, RunNotFound, StoreError, WorkflowNotFound
from orchestrator.settings import Settings
from orchestrator.store.handoff import SIZE_KEY
from orchestrator.store.history import (
    RunFilter,
    RunPage,
    count_by_status,
    ensure_history_indexes,
    oldest_first,
    page_runs,
)
from orchestrator.store.models import Run, utcnow
from orchestrator.store.node_logs import ensure_log_indexes
from orchestrator.store.spec_versions import save_version
from orchestrator.store.wait_records import WaitRecords

Document = dict[str, Any]
LINEAGE = {"_id": 1, "status": 1, "workflow": 1, "parent_run_id": 1, "parent_node_id": 1, "trigger": 1}
"""What the end of a run returns: enough to tell whoever waits for it (`run_ends`)."""
OUTPUT_HINT = ". Store large data elsewhere and pass an identifier."


def run_ending(status: RunStatus, results: Any, error: str | None, results_omitted: str | None) -> Document:
    """The fields a run's end sets; `results_omitted` only when there is one, so that runs
    that kept their results have no such field."""
    ending: Document = {"status": status, "results": results, "error": error}
    if results_omitted is not None:
        ending["results_omitted"] = results_omitted
    return ending


def open_store(settings: Settings) -> RunStore:
    """The run store of `settings` (its MongoDB client connects on first use)."""
    db = connect(settings.mongo_url, settings.mongo_database, int(settings.connect_timeout_s * 1000))
    return RunStore(db, max_run_doc_bytes=settings.max_run_doc_bytes)


def connect(mongo_url: str, database: str, timeout_ms: int = 5000) -> Database[Document]:
    """A database handle for `mongo_url` (connections are made lazily by pymongo)."""
    client: MongoClient[Document] = MongoClient(
        mongo_url, serverSelectionTimeoutMS=timeout_ms, tz_aware=True, uuidRepresentation="standard"
    )
    return client[database]


RUN_FIELDS = ("_id", "workflow", "status", "variables", "trigger", "parent_run_id", "parent_node_id",
              "root_run_id", "depth", "epoch", "spec_digest", "created_at", "started_at")  # fmt: skip
"""The run-level fields a node's context holds (with the states of the nodes it reads)."""


SIZED = {SIZE_KEY: {"$bsonSize": "$$ROOT"}}
"""A projection's part that has the server measure the document (`$bsonSize`, MongoDB 4.4 on)."""


def node_projection(node_ids: Iterable[str]) -> Document:
    """A projection of the run's fields and of the given nodes' states only."""
    return {**dict.fromkeys(RUN_FIELDS, 1), **{f"nodes.{node_id}": 1 for node_id in node_ids}}


def nested(doc: Document) -> Document:
    """A projected run document with its node states under `nodes` (empty when none came)."""
    nested_paths(doc).setdefault("nodes", {})
    return doc


def nested_paths(doc: Document) -> Document:
    """A projected document with every flat dotted key put back under its parents: MongoDB
    returns a projection of `a.b` nested, nx-27017 as a flat key `"a.b"`; both come out nested."""
    for key in [key for key in doc if "." in key]:
        value, parts = doc.pop(key), key.split(".")
        place = doc
        for part in parts[:-1]:
            place = place.setdefault(part, {})
        place[parts[-1]] = value
    return doc


def epoch_filter(epoch: int) -> Document:
    """The filter part that matches a run whose current epoch is `epoch`.

    A run starts at epoch 0, stored as no field at all (its documents and messages stay as
    small as before); the reconciler bumps it when it sends the rest of a run again.
    """
    return {"epoch": epoch} if epoch else {"epoch": {"$exists": False}}


Update = tuple[Document, Document]  # a compare-and-set update: its filter and its change


def _in_likely_order(starting: Update, running: Update, first: bool) -> list[Update]:
    """The updates to try, in turn, on a run that was `pending` in the document a node ran
    from: its only source starts it (`starting` first); any other node most likely finds it
    started by another (`running` first, then `starting`, then `running` again, since a run
    may be started between the two)."""
    return [starting, running] if first else [running, starting, running]


@dataclass(frozen=True)
class NodeStart:
    """What a node's message brings to its start: its attempt, the run's epoch it belongs to,
    and the lease it takes (`orchestrator.engine.leases`)."""

    attempt: int
    epoch: int = 0
    lease_until: float | None = None
    holder: str | None = None
    task_id: str | None = None

    def lease(self) -> Document:
        """The lease fields of the node's state (none without a lease)."""
        if self.lease_until is None:
            return {}
        return {"lease_until": self.lease_until, "worker": self.holder, "task_id": self.task_id}


class RunStore:
    """Run documents (`runs`) and workflow definitions (`workflows`) in one MongoDB database."""

    def __init__(self, db: Database[Document], max_run_doc_bytes: int = 1024 * 1024) -> None:
        self.db = db
        self.runs: Collection[Document] = db[RUNS]
        self.workflows: Collection[Document] = db[WORKFLOWS]
        self.max_run_doc_bytes = max_run_doc_bytes
        self.wait_records = WaitRecords(db[WAITS], max_run_doc_bytes, db[WAIT_ITEMS])

    # -- set-up ---------------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """The indexes every list and tree query uses (`orchestrator.store.history.INDEXES`), and
        those of the node logs."""
        try:
            ensure_history_indexes(self.runs)
            ensure_log_indexes(self.db[NODE_LOGS])
            self.wait_records.ensure_indexes()
            self._version_registered_workflows()
        except PyMongoError as exc:
            raise StoreError(f"cannot create indexes on {self.db.name}.{RUNS}: {exc}") from exc

    def _version_registered_workflows(self) -> None:
        """Keep, under its digest, each workflow registered before versions were kept."""
        for doc in self.workflows.find({"digest": {"$exists": False}}):
            self.save_workflow(WorkflowSpec.model_validate(doc["spec"]))

    def ping(self) -> None:
        """Raise `StoreError` when the server does not answer."""
        try:
            self.db.client.admin.command("ping")
        except PyMongoError as exc:
            raise StoreError(f"MongoDB does not answer: {exc}") from exc

    # -- workflows ------------------------------------------------------------------------

    def save_workflow(self, spec: WorkflowSpec) -> str:
        """Store (or replace) a workflow definition under its name, and keep this version
        under its digest (`orchestrator.store.spec_versions`); the digest."""
        digest = save_version(self.db[WORKFLOW_VERSIONS], spec)
        doc = {
            "_id": spec.name,
            "spec": spec.model_dump(mode="json"),
            "digest": digest,
            "updated_at": utcnow(),
        }
        self.workflows.replace_one({"_id": spec.name}, doc, upsert=True)
        return digest

    def get_workflow(self, name: str) -> WorkflowSpec:
        """The registered workflow with that name."""
        doc = self.workflows.find_one({"_id": name})
        if doc is None:
            raise WorkflowNotFound(
                f"no workflow named '{name}' is registered "
                "(register it with `orchestrator workflows apply FILE`)"
            )
        return WorkflowSpec.model_validate(doc["spec"])

    def workflow_of_run(self, workflow: str, digest: str | None) -> WorkflowSpec | None:
        """The definition a run started with (its version, by `digest`), else the workflow as
        registered now, else None (removed since)."""
        if digest is not None:
            found = self.db[WORKFLOW_VERSIONS].find_one({"_id": digest})
            if found is not None:
                return WorkflowSpec.model_validate(found["spec"])
        try:
            return self.get_workflow(workflow)
        except WorkflowNotFound:
            return None

    def list_workflows(self) -> list[WorkflowSpec]:
        """Every registered workflow, by name."""
        return [WorkflowSpec.model_validate(d["spec"]) for d in self.workflows.find().sort("_id", ASCENDING)]

    def workflow_names(self) -> set[str]:
        """Names of every registered workflow."""
        return {d["_id"] for d in self.workflows.find({}, {"_id": 1})}

    def delete_workflow(self, name: str) -> bool:
        """Remove a workflow definition; True when one was removed."""
        return self.workflows.delete_one({"_id": name}).deleted_count == 1

    # -- runs: create and read ------------------------------------------------------------

    def create_run(self, doc: Document) -> tuple[Document, bool]:
        """Insert a run document; when its id exists already, return that one instead.

        Returns:
            The stored document and whether this call created it.
        """
        try:
            self.runs.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            return self.get_run_document(doc["_id"]), False

    def get_run_document(self, run_id: str) -> Document:
        """The raw run document."""
        doc = self.runs.find_one({"_id": run_id})
        if doc is None:
            raise RunNotFound(f"no run with id '{run_id}'")
        return doc

    def resolve_run_id(self, prefix: str) -> str:
        """The id of the one run whose id is `prefix` or starts with it (as git resolves a
        short commit id); `RunNotFound` when none or several do.

        A run's children have ids that start with its own (`<run>.<node>`), so the start of a
        run's id names that run, not its children: it is ambiguous only when it is also the
        start of an id outside that run's family.
        """
        if self.runs.count_documents({"_id": prefix}, limit=1):
            return prefix
        end = prefix + "\uffff"
        first = self._first_id_in(prefix, end, inclusive=True)
        if first is None:
            raise RunNotFound(f"no run with id '{prefix}' (nor one whose id starts with it)")
        family_end = first + ".\uffff"  # `.` sorts before digits and letters: a family is one range
        outside = self._first_id_in(first, first + ".") or self._first_id_in(family_end, end)
        if outside is None:
            return first
        raise RunNotFound(
            f"'{prefix}' is the start of several run ids ({first}, {outside}, …): give more of it"
        )

    def _first_id_in(self, low: str, high: str, inclusive: bool = False) -> str | None:
        """The smallest run id in the range (`low`, `high`), or [`low`, `high`)."""
        query = {"_id": {"$gte" if inclusive else "$gt": low, "$lt": high}}
        for doc in self.runs.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(1):
            return str(doc["_id"])
        return None

    def get_run(self, run_id: str) -> Run:
        """The run document as a `Run`."""
        return Run.model_validate(self.get_run_document(run_id))

    def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs, newest first, filtered by workflow, status and parent."""
        return self.page_runs(RunFilter(workflow=workflow, status=status, parent=parent_run_id), limit).runs

    def page_runs(self, where: RunFilter, limit: int = 50, cursor: str | None = None) -> RunPage:
        """A page of runs matching `where`, newest first, after `cursor` (`orchestrator.store.history`)."""
        return page_runs(self.runs, where, limit, cursor)

    def count_runs_by_status(self, where: RunFilter) -> dict[str, int]:
        """How many runs match `where` (its status aside) in each status."""
        return count_by_status(self.runs, where)

    def children(self, run_id: str) -> list[Run]:
        """The runs started by `run_id`'s nodes, oldest first."""
        return oldest_first(Run.model_validate(d) for d in self.runs.find({"parent_run_id": run_id}))

    def node_children_by_status(self, run_id: str, node_id: str) -> dict[str, int]:
        """How many runs one node of `run_id` started, by status (statuses with none left out):
        a count by the server, over the index `children_of_node`, whatever their number."""
        match = {"parent_run_id": run_id, "parent_node_id": node_id}
        rows = self.runs.aggregate([{"$match": match}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        return {str(row["_id"]): int(row["n"]) for row in rows}

    def node_children(
        self,
        run_id: str,
        node_id: str,
        statuses: Iterable[str] | None = None,
        fields: Iterable[str] = (),
        limit: int = 0,
    ) -> list[Document]:
        """The runs one node of `run_id` started (those in `statuses`, when given), with only
        `fields` (dotted paths, nested in the result whatever the server), at most `limit`."""
        query: Document = {"parent_run_id": run_id, "parent_node_id": node_id}
        if statuses is not None:
            query["status"] = {"$in": list(statuses)}
        projection = dict.fromkeys(["status", *fields], 1)
        return [nested_paths(doc) for doc in self.runs.find(query, projection, limit=limit)]

    def run_tree(self, run_id: str) -> Run:
        """The run with its descendants in `children`, recursively."""
        root = self.get_run(run_id)
        by_parent: dict[str, list[Run]] = {}
        found = self.runs.find({"root_run_id": root.root_run_id or root.id})
        for run in oldest_first(Run.model_validate(doc) for doc in found):
            if run.parent_run_id:
                by_parent.setdefault(run.parent_run_id, []).append(run)
        self._attach(root, by_parent)
        return root

    def _attach(self, run: Run, by_parent: dict[str, list[Run]]) -> None:
        run.children = by_parent.get(run.id, [])
        for child in run.children:
            self._attach(child, by_parent)

    def descendants(self, run_id: str) -> Iterator[Run]:
        """Every run below `run_id`, parents before children."""
        for child in self.children(run_id):
            yield child
            yield from self.descendants(child.id)

    def mark_dispatched(self, run_ids: Iterable[str]) -> None:
        """Record that the canvases of these runs are on the broker (`dispatched_at`)."""
        self.runs.update_many(
            {"_id": {"$in": list(run_ids)}, "dispatched_at": None}, {"$currentDate": {"dispatched_at": True}}
        )

    def undispatched_runs(self) -> list[Document]:
        """Pending runs whose canvas was never recorded as sent."""
        return list(self.runs.find({"status": "pending", "dispatched_at": None}))

    def release_dispatch(self, run_id: str) -> None:
        """Undo a claim whose send failed, so that the sweeper tries the run again."""
        self.runs.update_one(
            {"_id": run_id, "status": "pending", "dispatched_at": None}, {"$set": {"dispatch_claim": None}}
        )

    def claim_dispatch(self, run_id: str, held_by: str | None = None) -> bool:
        """Take the sending of a canvas its creator never recorded: True for one caller only.

        A claim is a token with its time (`dispatch_claim`, `dispatch_claimed_at`) rather than
        `dispatched_at` itself, so that a claimer that stops before sending does not leave
        the run looking sent: once its claim is old, another caller takes it over.

        Args:
            held_by: the claim the caller found on the run and judged expired (None: none).
        """
        claimed = self.runs.update_one(
            {"_id": run_id, "status": "pending", "dispatched_at": None, "dispatch_claim": held_by},
            {"$set": {"dispatch_claim": uuid.uuid4().hex}, "$currentDate": {"dispatch_claimed_at": True}},
        )
        return claimed.modified_count == 1

    # -- nodes ----------------------------------------------------------------------------

    def start_node(
        self,
        run_id: str,
        node_id: str,
        start: NodeStart,
        first: bool = False,
        reads: Iterable[str] | None = None,
    ) -> Document | None:
        """Mark a node `running` if the run is active and the node pending or running (a redelivery).

        Args:
            first: the node is the run's only source, so its start is the run's start: the
                run's `started_at` is stamped in the same update (one round trip, not two).
            reads: the nodes whose states the node reads (its own among them): the document
                comes back with only those and the run's fields (`RUN_FIELDS`), and its size
                (before the start) under `SIZE_KEY`; None: the whole document.

        Returns:
            The run document as it was before (other nodes' outputs included), or None when
            the run is over or the node already finished or waits (a redelivered message).
        """
        startable, update = self._starting(run_id, node_id, start)
        # The size comes back with the document, measured by the server (`$bsonSize` in a
        # projection: MongoDB 4.4 on, nx-27017): no second round trip to read it.
        projection = None if reads is None else node_projection(reads) | SIZED
        before = None
        if first:
            before = self.runs.find_one_and_update(
                {**startable, "status": "pending"},
                {**update, "$currentDate": {"started_at": True}},
                projection=projection,
                return_document=ReturnDocument.BEFORE,
            )
        if before is None:
            before = self.runs.find_one_and_update(
                {**startable, "status": {"$in": list(RUN_ACTIVE)}},
                update,
                projection=projection,
                return_document=ReturnDocument.BEFORE,
            )
            if before is not None and before.get("status") == "pending":
                self.runs.update_one(
                    {"_id": run_id, "started_at": None}, {"$currentDate": {"started_at": True}}
                )
        if before is None or projection is None:
            return before
        return nested(before)

    def read_run(self, run_id: str, reads: Iterable[str] | None = None) -> Document:
        """The run document, or (with `reads`) its fields and those nodes' states only, with
        its size under `SIZE_KEY`, in one round trip.

        Raises:
            RunNotFound: there is no such run.
        """
        if reads is None:
            return self.get_run_document(run_id)
        found = self.runs.find_one({"_id": run_id}, node_projection(reads) | SIZED)
        if found is None:
            raise RunNotFound(f"no run with id '{run_id}'")
        return nested(found)

    def mark_node_running(
        self, run_id: str, node_id: str, start: NodeStart, run_was: RunStatus = "running", first: bool = False
    ) -> bool:
        """Mark a node `running` as `start_node` does, without reading the document back: for
        a node handed the document by the node before it, or by the run's launch.

        Args:
            run_was: the run's status in the document handed on: when `pending`, the run may
                still be, and the update that marks the node then also stamps `started_at`.
            first: the node is the run's only source (its start is the run's start).

        Returns:
            True when it was marked; False when the run is over or the node already
            finished or waits (a redelivered message).
        """
        startable, update = self._starting(run_id, node_id, start)
        if run_was != "pending":
            marked = self.runs.update_one({**startable, "status": {"$in": list(RUN_ACTIVE)}}, update)
            return marked.matched_count == 1
        starting = ({**startable, "status": "pending"}, {**update, "$currentDate": {"started_at": True}})
        running = ({**startable, "status": "running"}, update)
        return any(
            self.runs.update_one(where, change).matched_count == 1
            for where, change in _in_likely_order(starting, running, first)
        )

    @staticmethod
    def _starting(run_id: str, node_id: str, start: NodeStart) -> tuple[Document, Document]:
        """The filter (the node startable, by a message of the run's current epoch) and the
        update (node and run `running`, the node's lease taken) of a node's start."""
        state = {"status": "running", "attempts": start.attempt, "started_at": utcnow(), **start.lease()}
        startable = {
            "_id": run_id,
            f"nodes.{node_id}.status": {"$in": list(NODE_STARTABLE)},
            **epoch_filter(start.epoch),
        }
        return startable, {"$set": {"status": "running", f"nodes.{node_id}": state}}

    def renew_lease(self, run_id: str, node_id: str, attempt: int, until: float) -> bool:
        """Extend the lease of a node that is still running this attempt."""
        renewed = self.runs.update_one(
            {"_id": run_id, f"nodes.{node_id}.status": "running", f"nodes.{node_id}.attempts": attempt},
            {"$set": {f"nodes.{node_id}.lease_until": until}},
        )
        return renewed.modified_count == 1

    def bump_epoch(self, run_id: str, epoch: int) -> bool:
        """Make `epoch + 1` the run's current epoch, if `epoch` still is: True for one caller.
        Messages of older epochs start nothing from then on."""
        bumped = self.runs.update_one(
            {"_id": run_id, "status": {"$in": list(RUN_ACTIVE)}, **epoch_filter(epoch)},
            {"$set": {"epoch": epoch + 1}},
        )
        return bumped.modified_count == 1

    def active_runs(self, fields: Iterable[str]) -> Iterator[Document]:
        """Every `pending` or `running` run, with the given top-level fields."""
        yield from self.runs.find({"status": {"$in": list(RUN_ACTIVE)}}, {f: 1 for f in fields})

    def end_node(
        self,
        run_id: str,
        node_id: str,
        state: Document,
        doc_size: int = 0,
        from_statuses: Iterable[str] = NODE_ENDABLE,
        run_was: RunStatus | None = None,
        epoch: int = 0,
        first: bool = True,
    ) -> bool:
        """Record a node's final state (`finished`, `failed` or `skipped`), once.

        Args:
            state: the node's whole sub-document (`status`, `output`, `error`, times…).
            doc_size: the run document's current size in bytes, to refuse outputs that
                would push it past the limit.
            run_was: for a node that was never marked running (a pure node, which runs
                from the document as it read it): the run's status then. The end is then
                recorded only while the run is active, and it starts a pending run.

        Returns:
            True when this call recorded it, False when the node was over already (or,
            with `run_was`, the run was).

        Raises:
            DocumentTooLarge: the output would make the run document too large.
        """
        self._check_size(node_id, state, doc_size)
        for where, update in self._end_updates(run_id, node_id, state, from_statuses, run_was, epoch, first):
            if self.runs.update_one(where, update).modified_count == 1:
                return True
        return False

    def end_last_node(
        self,
        run_id: str,
        node_id: str,
        state: Document,
        status: RunStatus,
        results: Any = None,
        error: str | None = None,
        doc_size: int = 0,
        run_was: RunStatus | None = None,
        epoch: int = 0,
        results_omitted: str | None = None,
        first: bool = True,
    ) -> Document | None:
        """Record a run's last node and end the run, in one update, once.

        Args:
            run_was, first: as for `end_node`: a pending run is started (and ended) by this update.
            results_omitted: as for `end_run`.

        Returns:
            The run's `LINEAGE` after, or None when the node was over already or the run was
            (cancelled meanwhile, say): nothing was written then.

        Raises:
            DocumentTooLarge: the output would make the run document too large.
        """
        self._check_size(node_id, state, doc_size)
        ending = run_ending(status, results, error, results_omitted)
        ends = self._end_updates(run_id, node_id, state, NODE_ENDABLE, run_was or "running", epoch, first)
        for where, update in ends:
            update["$set"].update(ending)
            update["$currentDate"] = {**update.get("$currentDate", {}), "finished_at": True}
            after = self.runs.find_one_and_update(
                where, update, projection=LINEAGE, return_document=ReturnDocument.AFTER
            )
            if after is not None:
                return after
        return None

    @classmethod
    def _end_updates(
        cls,
        run_id: str,
        node_id: str,
        state: Document,
        from_statuses: Iterable[str],
        run_was: RunStatus | None,
        epoch: int = 0,
        first: bool = True,
    ) -> list[Update]:
        """The compare-and-set updates that record a node's end, in the order to try them.

        A node marked running ends whatever the run's status (a cancelled run keeps its
        nodes' ends). A node never marked running (`run_was` given) ends only in an active
        run, by a message of the run's current `epoch`; when the run was pending, its end is
        also the run's start, unless another node started the run meanwhile (tried first
        unless the node is the run's only source, `first`).
        """
        where = cls._ending(run_id, node_id, from_statuses)
        recorded = {f"nodes.{node_id}": state}
        if run_was is None:
            return [(where, {"$set": recorded})]
        where.update(epoch_filter(epoch))
        in_running = ({**where, "status": "running"}, {"$set": dict(recorded)})
        if run_was != "pending":
            return [in_running]
        starting = (
            {**where, "status": "pending"},
            {"$set": {**recorded, "status": "running"}, "$currentDate": {"started_at": True}},
        )
        return _in_likely_order(starting, in_running, first)

    @staticmethod
    def _ending(run_id: str, node_id: str, from_statuses: Iterable[str]) -> Document:
        return {"_id": run_id, f"nodes.{node_id}.status": {"$in": list(from_statuses)}}

    def _check_size(self, node_id: str, state: Document, doc_size: int) -> None:
        if state.get("output") is not None:
            self.check_room(f"node '{node_id}' output is", {"o": state["output"]}, doc_size, OUTPUT_HINT)

    def set_node_state(self, run_id: str, node_id: str, state: Document, expected: Iterable[str]) -> bool:
        """Compare-and-set a node's sub-document; True when the node was in `expected`."""
        result = self.runs.update_one(
            {"_id": run_id, f"nodes.{node_id}.status": {"$in": list(expected)}},
            {"$set": {f"nodes.{node_id}": state}},
        )
        return result.modified_count == 1

    def check_room(self, what: str, added: Document, doc_size: int, hint: str = "") -> None:
        """Refuse to add `added` to a run document of `doc_size` bytes past the size budget.

        Raises:
            DocumentTooLarge: saying `<what> N KiB` and the document's size and limit.
        """
        if not doc_size:
            return
        size = len(bson.encode(added))
        if doc_size + size > self.max_run_doc_bytes:
            raise DocumentTooLarge(
                f"{what} {size / 1024:.0f} KiB and the run document is already "
                f"{doc_size / 1024:.0f} KiB: together they would pass the "
                f"{self.max_run_doc_bytes / 1024:.0f} KiB limit (ORCH_MAX_RUN_DOC_BYTES)" + hint
            )

    def set_waiting(self, run_id: str, node_id: str, state: Document, wait: Document) -> bool:
        """Move a running node to `waiting`, its wait record kept in `waits`
        (`orchestrator.store.wait_records`); False when the node was not running any more."""
        self.wait_records.put(run_id, node_id, wait)
        result = self.runs.update_one(
            {"_id": run_id, f"nodes.{node_id}.status": "running"}, {"$set": {f"nodes.{node_id}": state}}
        )
        return result.modified_count == 1

    def overdue_waits(self, before: float) -> Iterator[tuple[str, str]]:
        """`(run_id, node_id)` of waiting nodes whose next poll was due before `before`; a
        record whose node no longer waits (its run was cancelled, say) is closed instead."""
        for run_id, node_id in self.wait_records.overdue(before):
            still = {"_id": run_id, "status": {"$in": list(RUN_ACTIVE)}, f"nodes.{node_id}.status": "waiting"}
            if self.runs.count_documents(still, limit=1):
                yield run_id, node_id
            else:
                self.wait_records.close(run_id, node_id)

    # -- runs: status ---------------------------------------------------------------------

    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        results: Any = None,
        error: str | None = None,
        from_statuses: Iterable[str] = RUN_ACTIVE,
        results_omitted: str | None = None,
    ) -> Document | None:
        """Move a run to a final status, once; its `LINEAGE` after, or None if it was over.

        Args:
            results_omitted: why a finished run's `results` is null (`outcome.Outcome`);
                written only when given.
        """
        return self.runs.find_one_and_update(
            {"_id": run_id, "status": {"$in": list(from_statuses)}},
            {
                "$set": run_ending(status, results, error, results_omitted),
                "$currentDate": {"finished_at": True},
            },
            projection=LINEAGE,
            return_document=ReturnDocument.AFTER,
        )

    def cancel_run(self, run_id: str, cascade: bool = True) -> list[str]:
        """Cancel a run that is not over (and its active descendants); the ids cancelled."""
        cancelled: list[str] = []
        if self.end_run(run_id, "cancelled", error="cancelled by request") is not None:
            cancelled.append(run_id)
        else:
            self.get_run_document(run_id)  # RunNotFound when it does not exist
        if cascade:
            for child in self.descendants(run_id):
                if child.status not in RUN_OVER and self.end_run(
                    child.id, "cancelled", error=f"cancelled with run {run_id}"
                ):
                    cancelled.append(child.id)
        return cancelled
