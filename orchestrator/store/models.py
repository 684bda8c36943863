"""Run documents as pydantic models: what `runs` holds, read back and typed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from orchestrator.constants import RUN_OVER, NodeStatus, RunStatus


def utcnow() -> datetime:
    """Now, in UTC, at MongoDB's millisecond precision."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def epoch_ms(moment: datetime) -> int:
    """A time as integer milliseconds since the epoch (naive times taken as UTC)."""
    return int(aware(moment).timestamp() * 1000)


def new_run_id() -> str:
    """A fresh run id."""
    return uuid.uuid4().hex


class NodeState(BaseModel):
    """One node's part of a run document."""

    model_config = ConfigDict(extra="allow")

    status: NodeStatus = "pending"
    output: JsonValue = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (or to now, while running)."""
        return seconds_between(self.started_at, self.finished_at)


def seconds_between(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from `started` to `finished` (or to now, when not finished); None before a start."""
    if started is None:
        return None
    return (aware(finished or utcnow()) - aware(started)).total_seconds()


def aware(value: datetime) -> datetime:
    """The datetime in UTC (naive values are taken as UTC, as pymongo returns them)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def node_state(**fields: Any) -> dict[str, Any]:
    """A node's whole sub-document (every field of the contract), finished now unless given."""
    fields.setdefault("finished_at", utcnow())
    return NodeState(**fields).model_dump()


class Run(BaseModel):
    """A run document (`_id` is `id` here)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(alias="_id")
    workflow: str
    status: RunStatus
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    trigger: dict[str, JsonValue] = Field(default_factory=dict)
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    rerun_of: str | None = None
    spec_digest: str | None = None
    nodes: dict[str, NodeState] = Field(default_factory=dict)
    results: JsonValue = None
    results_omitted: str | None = None  # why `results` is null in a finished run
    error: str | None = None
    created_at: datetime
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    children: list[Run] = Field(default_factory=list, exclude=True)

    @property
    def is_over(self) -> bool:
        """Whether the run has reached a final status."""
        return self.status in RUN_OVER

    @property
    def queued_s(self) -> float | None:
        """Seconds the run's canvas waited on the broker for a worker (None until it started)."""
        if self.dispatched_at is None or self.started_at is None:
            return None
        return max((aware(self.started_at) - aware(self.dispatched_at)).total_seconds(), 0.0)

    @property
    def duration_s(self) -> float | None:
        """Seconds from the first node's start to the end (or to now, while running)."""
        return seconds_between(self.started_at, self.finished_at)

    def to_document(self) -> dict[str, Any]:
        """The run as JSON-able data, children included, datetimes as ISO strings."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.children:
            data["children"] = [child.to_document() for child in self.children]
        return data


def new_run_document(
    *,
    run_id: str,
    workflow: str,
    node_ids: list[str],
    variables: dict[str, Any],
    trigger: dict[str, Any],
    parent_run_id: str | None = None,
    parent_node_id: str | None = None,
    root_run_id: str | None = None,
    depth: int = 0,
) -> dict[str, Any]:
    """The document of a new, `pending` run, every node `pending`.

    `created_ms` is `created_at` in integer milliseconds: the key runs are listed and paged by
    (some MongoDB-wire servers compare datetimes to the second only)."""
    created = utcnow()
    return {
        "_id": run_id,
        "workflow": workflow,
        "status": "pending",
        "variables": variables,
        "trigger": trigger,
        "parent_run_id": parent_run_id,
        "parent_node_id": parent_node_id,
        "root_run_id": root_run_id or run_id,
        "depth": depth,
        "nodes": {node_id: {"status": "pending", "attempts": 0} for node_id in node_ids},
        "results": None,
        "error": None,
        "created_at": created,
        "created_ms": epoch_ms(created),
        "dispatched_at": None,  # set once the run's canvas is on the broker
        "started_at": None,
        "finished_at": None,
    }
