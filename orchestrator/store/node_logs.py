"""Node logs: what a node logs while it runs, kept with its run and node, bounded.

One document per node attempt in the `node_logs` collection (`<run>/<node>/<attempt>`), out
of the run document so that logs never eat the run's size budget. A worker keeps the last
`MAX_LOG_BYTES` of an attempt's lines in memory (`NodeLogBuffer`) and writes them whole
(a `$set`, never a `$push`: see SERVICES.md) at most once a second while the node runs and
once when it ends; lines cut from the start are counted, so a reader can say so.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from pymongo import ASCENDING
from pymongo.collection import Collection

Document = dict[str, Any]
MAX_LOG_BYTES = 64 * 1024
"""The most of one node attempt's log kept: its last lines up to this many bytes."""
MAX_LINE_CHARS = 4096
"""A longer line is cut to this many characters (with a note)."""
FLUSH_EVERY_S = 1.0
NOT_FOR_NODE_LOG = "orchestrator_not_for_node_log"
"""A log record with this attribute set (`extra={NOT_FOR_NODE_LOG: True}`) stays out of the
node log: it reached it another way (a node's own logger writes there directly)."""

# Control characters (a terminal's escape sequences among them) are shown, not obeyed.
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F] if code not in (0x09, 0x0A)}


class LogLine(BaseModel):
    """One line a node logged: when (epoch seconds), its level and its text."""

    t: float
    level: str = "INFO"
    text: str


class NodeLog(BaseModel):
    """The log of one attempt of one node."""

    run_id: str
    node_id: str
    attempt: int = 1
    lines: list[LogLine] = Field(default_factory=list)
    cut_lines: int = 0
    """Lines dropped from the start to keep the last `MAX_LOG_BYTES`."""
    done: bool = False
    """The attempt is over: no more lines will come."""
    updated: float = 0.0


def log_id(run_id: str, node_id: str, attempt: int) -> str:
    """The `_id` of an attempt's log document."""
    return f"{run_id}/{node_id}/{attempt}"


def ensure_log_indexes(logs: Collection[Document]) -> None:
    """The index that serves reading a run's logs in order."""
    logs.create_index(
        [("run_id", ASCENDING), ("node_id", ASCENDING), ("attempt", ASCENDING)], name="by_run_node"
    )


def read_logs(logs: Collection[Document], run_id: str, node_id: str | None = None) -> list[NodeLog]:
    """The logs of a run (or of one of its nodes), by node then attempt."""
    query: Document = {"run_id": run_id}
    if node_id is not None:
        query["node_id"] = node_id
    cursor = logs.find(query).sort([("node_id", ASCENDING), ("attempt", ASCENDING)])
    return [NodeLog.model_validate(doc) for doc in cursor]


def delete_logs(logs: Collection[Document], run_ids: Iterable[str]) -> int:
    """Remove the logs of these runs; how many attempt logs were removed."""
    return int(logs.delete_many({"run_id": {"$in": list(run_ids)}}).deleted_count)


@dataclass
class NodeLogBuffer:
    """The last `max_bytes` of one node attempt's log lines, written to MongoDB now and then.

    Thread-safe: a node's code may log from threads of its own, and a flusher thread writes.
    """

    logs: Collection[Document]
    run_id: str
    node_id: str
    attempt: int
    max_bytes: int = MAX_LOG_BYTES
    _lines: deque[LogLine] = field(default_factory=deque)
    _bytes: int = 0
    _cut: int = 0
    _dirty: bool = False
    _last_flush: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, level: str, text: str, t: float | None = None) -> None:
        """Keep one line (cut to `MAX_LINE_CHARS`), dropping the oldest past `max_bytes`."""
        text = text.translate(_CONTROLS)
        if len(text) > MAX_LINE_CHARS:
            text = f"{text[:MAX_LINE_CHARS]}… [{len(text) - MAX_LINE_CHARS:,} more characters cut]"
        line = LogLine(t=time.time() if t is None else t, level=level, text=text)
        size = len(text.encode("utf-8", "replace")) + 16
        with self._lock:
            self._lines.append(line)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._lines) > 1:
                dropped = self._lines.popleft()
                self._bytes -= len(dropped.text.encode("utf-8", "replace")) + 16
                self._cut += 1
            self._dirty = True

    def due(self, now: float | None = None) -> bool:
        """Whether lines wait to be written and the last write is `FLUSH_EVERY_S` old."""
        now = time.time() if now is None else now
        return self._dirty and now - self._last_flush >= FLUSH_EVERY_S

    def flush(self, done: bool = False) -> None:
        """Write the kept lines (whole) when any are new, or when the attempt is `done`."""
        with self._lock:
            if not self._dirty and not done:
                return
            lines = [line.model_dump() for line in self._lines]
            cut, self._dirty = self._cut, False
            self._last_flush = time.time()
        if not lines and not cut:
            return  # a node that logged nothing has no log document
        self.logs.update_one(
            {"_id": log_id(self.run_id, self.node_id, self.attempt)},
            {
                "$set": {
                    "run_id": self.run_id,
                    "node_id": self.node_id,
                    "attempt": self.attempt,
                    "lines": lines,
                    "cut_lines": cut,
                    "done": done,
                    "updated": time.time(),
                }
            },
            upsert=True,
        )
