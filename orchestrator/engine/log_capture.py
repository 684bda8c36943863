"""Capturing what a node logs while it runs, for its node log and the worker's log.

While a node's function runs (`NodeLogCapture.capturing`), every logging record emitted in
that thread (the node's `context.logger`, the libraries it calls, the engine's own warnings)
is kept in the attempt's `NodeLogBuffer`, masked for secrets, and written to MongoDB by a
flusher thread at most once a second, then once when the node ends. The same records reach
the worker's log with `run <id> node '<node>':` in front (`RunNodeFilter`), so a worker log
line says which run and node it is about.

The current node is a context variable: each thread of a `threads` pool, and each process of
a `prefork` pool, captures its own node.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from orchestrator.store.node_logs import FLUSH_EVERY_S, NOT_FOR_NODE_LOG, Document, NodeLogBuffer

logger = logging.getLogger("orchestrator.store.node_logs")
_PLAIN = "orchestrator_plain_message"


@dataclass(frozen=True)
class _Current:
    run_id: str
    node_id: str
    buffer: NodeLogBuffer


class NodeLogCapture:
    """Per process: the node each thread runs, its log buffer, and the thread that writes them.

    Args:
        logs: the `node_logs` collection (a callable, so that it is opened in the process
            that uses it, after any fork).
        mask: masks the secrets the process holds in a line.
    """

    def __init__(self, logs: Callable[[], Collection[Document]], mask: Callable[[str], str]) -> None:
        self._logs = logs
        self._mask = mask
        self._current: contextvars.ContextVar[_Current | None] = contextvars.ContextVar(
            f"orchestrator_node_log_{id(self)}", default=None
        )
        self._open: dict[int, NodeLogBuffer] = {}
        self._lock = threading.Lock()
        self._flusher_pid = 0
        self._handler = _CaptureHandler(self)

    def run_and_node(self) -> tuple[str, str] | None:
        """The run and node this thread runs now, or None outside a node."""
        current = self._current.get()
        return None if current is None else (current.run_id, current.node_id)

    @contextmanager
    def capturing(self, run_id: str, node_id: str, attempt: int) -> Iterator[NodeLogBuffer]:
        """Capture the log records of this thread into the attempt's node log while inside."""
        self._install()
        buffer = NodeLogBuffer(self._logs(), run_id, node_id, attempt)
        token = self._current.set(_Current(run_id, node_id, buffer))
        with self._lock:
            self._open[id(buffer)] = buffer
        try:
            yield buffer
        finally:
            self._current.reset(token)
            with self._lock:
                self._open.pop(id(buffer), None)
            self._write(buffer, done=True)

    def add(self, level: str, text: str) -> None:
        """Add an entry (one line, or a message of several) to the current node's log
        directly (not through `logging`), masked."""
        current = self._current.get()
        if current is not None:
            current.buffer.add(level, self._mask(text))

    def emit(self, record: logging.LogRecord) -> None:
        """Keep a record in the current node's log (called by the root logger's handler)."""
        current = self._current.get()
        if current is None or getattr(record, NOT_FOR_NODE_LOG, False):
            return
        text = getattr(record, _PLAIN, None) or record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        current.buffer.add(record.levelname, self._mask(text), record.created)

    def _install(self) -> None:
        """Once per process: the handler on the root logger, and the flusher thread."""
        root = logging.getLogger()
        if self._handler not in root.handlers:
            root.addHandler(self._handler)
        if self._flusher_pid != os.getpid():  # none yet, or a forked child's copy of the parent's
            self._flusher_pid = os.getpid()
            self._open.clear()
            self._lock = threading.Lock()
            threading.Thread(target=self._flush_forever, name="node-log-flusher", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY_S / 2)
            with self._lock:
                due = [buffer for buffer in self._open.values() if buffer.due()]
            for buffer in due:
                self._write(buffer)

    def _write(self, buffer: NodeLogBuffer, done: bool = False) -> None:
        try:
            buffer.flush(done=done)
        except PyMongoError as exc:  # logs are kept on a best-effort basis: the node goes on
            logger.warning(
                "run %s node '%s': its log was not written: %s", buffer.run_id, buffer.node_id, exc
            )


class _CaptureHandler(logging.Handler):
    def __init__(self, capture: NodeLogCapture) -> None:
        super().__init__(level=logging.DEBUG)
        self._capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._capture.emit(record)
        except Exception:
            self.handleError(record)


class RunNodeFilter(logging.Filter):
    """Puts `run <id> node '<node>':` in front of a worker log line emitted while a node runs
    (unless the line names the run already)."""

    def __init__(self, capture: NodeLogCapture) -> None:
        super().__init__()
        self._capture = capture

    def filter(self, record: logging.LogRecord) -> bool:
        where = self._capture.run_and_node()
        if where is not None:
            message = record.getMessage()
            if where[0] not in message:
                setattr(record, _PLAIN, message)  # for the node log, which needs no prefix
                record.msg, record.args = f"run {where[0]} node '{where[1]}': {message}", ()
        return True
