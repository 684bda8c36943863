"""Exact counts of what a process asks of MongoDB and of the broker, summed in a Redis hash.

Each process that takes part in a benchmark (the client, a worker's main process and its
prefork children) counts for itself:

* MongoDB: every command its clients send, through a `pymongo.monitoring.CommandListener`
  registered globally (`install`), so it must be installed before the process makes its
  first `MongoClient`. Bytes are the BSON size of the command (`event.command`, inserted
  documents included) and of the reply (`event.reply`), by command name too.
* Messages: every Celery task message it publishes, through the `before_task_publish`
  signal: one message, and the length of its body as kombu's JSON serializer writes it
  (`kombu.utils.json.dumps`); the headers' length too (kept apart), by task name too.

What it counts is pushed to one Redis hash (`HINCRBY`), after each task (`task_postrun`),
by a small thread at most `FLUSH_EVERY_S` later for anything counted outside a task, and on
demand (`flush`). The benchmark's client empties the hash before a measured run (`reset`)
and reads it once the run is over and the counts have stopped changing (`read`).

Counted events come from the process's own calls, so nothing is estimated; what is *not*
counted: Redis traffic other than task messages (results, chord counters, run-end notices,
Celery's task events and remote-control messages) and the message envelope kombu adds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import bson
import redis
from celery.signals import before_task_publish, task_postrun
from kombu.utils.json import dumps as kombu_dumps
from pymongo import monitoring

logger = logging.getLogger("bench.counters")

URL_ENV = "BENCH_COUNTS_URL"
"""The Redis URL of the hash, for worker processes (the client passes it to `install`)."""
KEY_ENV = "BENCH_COUNTS_KEY"
"""The hash's key, for worker processes."""
FLUSH_EVERY_S = 0.2

MONGO_COMMANDS = "mongo.commands"
MONGO_REQUEST_BYTES = "mongo.request_bytes"
MONGO_REPLY_BYTES = "mongo.reply_bytes"
MONGO_FAILED = "mongo.failed"
MESSAGES = "messages"
MESSAGE_BYTES = "message.body_bytes"
MESSAGE_HEADER_BYTES = "message.header_bytes"
BODY_PART_BYTES = "message.body_bytes:"
"""Prefix of the body bytes by part of the body `(args, kwargs, embed)`: `message.body_bytes:args`
(a node's handed-on snapshot), `:kwargs` (its spec), `:embed` (the rest of a chain, a chord's body)."""
BODY_PARTS = ("args", "kwargs", "embed")
BY_COMMAND = "mongo.commands:"
"""Prefix of the per-command-name counts (`mongo.commands:find`)."""
BYTES_BY_COMMAND = "mongo.bytes:"
"""Prefix of the per-command-name bytes, request plus reply (`mongo.bytes:find`)."""
BY_TASK = "messages:"
"""Prefix of the per-task-name message counts (`messages:workers.set`)."""
BYTES_BY_TASK = "message.bytes:"
"""Prefix of the per-task-name body bytes (`message.bytes:workers.set`)."""


def _json_size(value: Any) -> int:
    """Bytes of `value` as kombu's JSON serializer writes it (UTF-8)."""
    try:
        return len(kombu_dumps(value).encode())  # type: ignore[no-untyped-call]
    except (TypeError, ValueError):  # not JSON: the message would not go out as JSON either
        return 0


class Tally:
    """The counts of one process not pushed yet, and the pushing; thread-safe, fork-aware.

    Args:
        url, key: the Redis hash the counts go to; without them nothing is pushed (the
            counts stay here until `take`).
    """

    def __init__(self, url: str | None = None, key: str | None = None) -> None:
        self.url, self.key = url, key
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one push at a time: a flush returns once all is in
        self._paused = threading.local()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # -- counting -------------------------------------------------------------------------

    def add(self, counts: Mapping[str, int]) -> None:
        """Add counts (unless this thread is in `uncounted`)."""
        if self.paused:
            return
        self._check_fork()
        with self._lock:
            self._counts.update(counts)
        self._ensure_thread()

    @property
    def paused(self) -> bool:
        """Whether this thread's calls are left out (`uncounted`)."""
        return bool(getattr(self._paused, "on", False))

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Leave out what this thread does in the block (a benchmark's own watching)."""
        was = self.paused
        self._paused.on = True
        try:
            yield
        finally:
            self._paused.on = was

    def take(self) -> dict[str, int]:
        """The counts not pushed yet, forgotten here."""
        self._check_fork()
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts

    # -- pushing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Push the counts to the hash (`HINCRBY`), once any push under way is done; kept for
        the next try if Redis fails."""
        key = self.key
        if not self.url or not key:
            return
        self._check_fork()
        with self._flushing:
            self._push(key, {k: v for k, v in self.take().items() if v})

    def stop(self) -> None:
        """Push no more (the benchmark is over and its Redis about to stop): what is counted
        from now on is dropped, not retried against a server that is gone."""
        self.url = None

    def _push(self, key: str, counts: dict[str, int]) -> None:
        if not counts:
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            for field, value in counts.items():
                pipe.hincrby(key, field, value)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("could not push %d counts to %s: %s", len(counts), key, exc)
            with self._lock:
                self._counts.update(counts)

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(str(self.url), socket_timeout=5)
        return self._client

    def _ensure_thread(self) -> None:
        if self.url and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._flush_forever, name="bench-counts", daemon=True)
            self._thread.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY_S)
            with self.uncounted():
                self.flush()

    def _check_fork(self) -> None:
        """In a forked child (a prefork pool process): start empty, with a Redis client and a
        thread of its own; the parent keeps and pushes what it counted."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock, self._flushing = threading.Lock(), threading.Lock()
        self._counts = Counter()
        self._client, self._thread = None, None


class MongoCounter(monitoring.CommandListener):
    """Counts every MongoDB command of the process, its request and reply in BSON bytes."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.tally.paused:
            return
        size = len(bson.encode(event.command))
        name = event.command_name
        self.tally.add(
            {
                MONGO_COMMANDS: 1,
                MONGO_REQUEST_BYTES: size,
                BY_COMMAND + name: 1,
                BYTES_BY_COMMAND + name: size,
            }
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.tally.paused:
            return
        size = len(bson.encode(event.reply))
        self.tally.add({MONGO_REPLY_BYTES: size, BYTES_BY_COMMAND + event.command_name: size})

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if not self.tally.paused:
            self.tally.add({MONGO_FAILED: 1})


class MessageCounter:
    """Counts every task message the process publishes (`before_task_publish`): one message,
    its body's and its headers' bytes as kombu's JSON writes them, by task name too."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def published(
        self,
        sender: str | None = None,
        body: Any = None,
        headers: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        task = str((headers or {}).get("task") or sender or "?")
        size = _json_size(body)
        counts = {
            MESSAGES: 1,
            MESSAGE_BYTES: size,
            MESSAGE_HEADER_BYTES: _json_size(dict(headers or {})),
            BY_TASK + task: 1,
            BYTES_BY_TASK + task: size,
        }
        if isinstance(body, tuple | list) and len(body) == len(BODY_PARTS):  # Celery's protocol 2
            counts |= {
                BODY_PART_BYTES + part: _json_size(value)
                for part, value in zip(BODY_PARTS, body, strict=True)
            }
        self.tally.add(counts)


def flush_after_task(tally: Tally) -> Callable[..., None]:
    """A `task_postrun` handler: push what the task's process counted."""

    def flush(**kwargs: Any) -> None:
        with tally.uncounted():
            tally.flush()

    return flush


_tally: Tally | None = None


def install(url: str | None = None, key: str | None = None) -> Tally:
    """Count this process's MongoDB commands and task messages, once per process.

    Call it before the process makes any `MongoClient` (pymongo gives a global listener to
    the clients made after it is registered). The hash is `url`/`key`, else `BENCH_COUNTS_URL`
    / `BENCH_COUNTS_KEY` from the environment (how a worker learns it); a later call with
    both sets them.
    """
    global _tally
    if _tally is None:
        _tally = Tally(url or os.environ.get(URL_ENV), key or os.environ.get(KEY_ENV))
        monitoring.register(MongoCounter(_tally))
        before_task_publish.connect(
            MessageCounter(_tally).published, weak=False, dispatch_uid="bench.counters.publish"
        )
        task_postrun.connect(flush_after_task(_tally), weak=False, dispatch_uid="bench.counters.postrun")
    elif url and key:
        _tally.url, _tally.key = url, key
    return _tally


# -- the client's side ------------------------------------------------------------------------


def reset(client: redis.Redis, key: str) -> None:
    """Empty the hash (before a measured run)."""
    client.delete(key)


def read(client: redis.Redis, key: str) -> dict[str, int]:
    """Every count in the hash."""
    raw: Mapping[Any, Any] = client.hgetall(key)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
