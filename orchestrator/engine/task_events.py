"""What Celery's task events (and so Flower) say of node messages: the truth about nodes.

A node that fails is data the run goes on with, so its task returns normally and Celery
would report it as a success. Instead, the task process sends `task-failed` itself (with
the node's error and traceback) and returns `FAILED_RESULT`; the worker's request for node
tasks (`NodeRequest`) then does not send `task-succeeded`, which would override the failure
in every event consumer. The canvas goes on as before.

The request also sends `task-ignored` for a message that stopped early on purpose (a late
poll, a redelivery, a message of an older epoch) instead of leaving it `STARTED` for ever,
and says "waiting" rather than showing a `Retry` traceback when a waiting node polls again.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.worker.request import Request

logger = logging.getLogger(__name__)

FAILED_RESULT = "node failed"
"""What a node task returns when its node failed (no snapshot: the next node reads the run)."""
_FAILED_REPR = repr(FAILED_RESULT)


def same_reprs(task: Task) -> dict[str, str]:
    """The options that keep a message's `argsrepr`/`kwargsrepr` (`run <id>, node '<node>'`)
    on its retries and re-sends, which Celery would otherwise show as raw kwargs."""
    request = task.request
    return {
        name: value
        for name in ("argsrepr", "kwargsrepr")
        if isinstance(value := getattr(request, name, None), str) and value
    }


def report_failed_node(task: Task, error: str, traceback: str | None) -> None:
    """From the task's process: tell event consumers that this node message failed."""
    try:
        task.send_event("task-failed", retry=False, exception=error, traceback=traceback or "")
    except Exception as exc:  # events are for monitors: the run does not depend on them
        logger.warning("%s: could not send its task-failed event: %s", task.request.kwargsrepr, exc)


class NodeRequest(Request):  # type: ignore[misc]
    """The worker's request of node tasks: truthful events (see the module's docstring)."""

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-succeeded" and fields.get("result") == _FAILED_REPR:
            return  # the task's process sent task-failed
        if type == "task-retried" and fields.get("exception") == "None":  # a poll, not an error
            fields = {**fields, "exception": "waiting: the node polls again later", "traceback": ""}
        super().send_event(type, **fields)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, Ignore):
            self.send_event("task-ignored", reason=str(exc) or "stopped early (nothing left to do)")
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


_POLL = re.compile(r"retry: Retry in ([\d.]+)s$")
_REMEMBERED = 512


class NodeTaskLines(logging.Filter):
    """Celery's own worker log lines about node messages (received, succeeded, retry,
    ignored) say which run and node they are about, and a waiting node's poll reads
    "waiting" instead of "retry: Retry in 1.5s".

    Celery gives each of those records its context (`record.data`: the task's id and name,
    and for some its arguments' repr); the ids of the tasks this process ran are matched to
    their `run <id>, node '<node>'` through `remember` (connected to `task_prerun`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
        """`task_prerun` receiver: keep the running task's id with its arguments' repr."""
        where = getattr(getattr(task, "request", None), "kwargsrepr", None)
        if isinstance(task_id, str) and isinstance(where, str) and where.startswith("run "):
            with self._lock:
                self._seen[task_id] = where
                while len(self._seen) > _REMEMBERED:
                    self._seen.popitem(last=False)

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if not isinstance(data, dict):
            return True
        where = data.get("kwargs")
        if not (isinstance(where, str) and where.startswith("run ")):
            with self._lock:
                where = self._seen.get(str(data.get("id")))
        if where is None:
            return True
        message = _POLL.sub(r"waiting: polls again in \1 s", record.getMessage())
        record.msg, record.args = f"{message} ({where})", ()
        return True
