"""Run-end notices over Redis pub/sub, so that a waiter learns at once that a run is over.

The run document stays the source of truth: a notice only says "read the document now".
A waiter subscribes before its first read, so a run that ends in between is not missed;
a notice that is lost (Redis restarted, a worker killed between the run's last update and
the publish) costs the waiter one safety interval, after which it reads the document anyway.
Node waits (a `run_workflow` node in `wait` mode) do not use this: they are woken by a
message, see `orchestrator.engine.waiting`.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
from redis.client import PubSub

from orchestrator.engine.waiting import wake_parent

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp

logger = logging.getLogger("orchestrator.engine.run_ends")

CHANNEL_PREFIX = "orchestrator:run-ended:"
SUBSCRIBE_TIMEOUT_S = 2.0


def run_end_channel(run_id: str) -> str:
    """The pub/sub channel on which a run's end is announced."""
    return CHANNEL_PREFIX + run_id


def announce_run_end(client: redis.Redis, run_id: str, status: str) -> None:
    """Tell the run's waiters that it is over. Never raises: a lost notice only delays them."""
    try:
        client.publish(run_end_channel(run_id), status)
    except redis.RedisError as exc:
        logger.warning("run %s ended %s; could not announce it on Redis: %s", run_id, status, exc)


def tell_waiters(app: OrchestratorApp, run_doc: dict[str, Any]) -> None:
    """A run is over: wake the parent node waiting for it, and announce it to API and CLI waiters."""
    wake_parent(app, run_doc)
    announce_run_end(app.backend.client, run_doc["_id"], run_doc["status"])


class RunEndListener:
    """A subscription to one run's end notice, open for the life of a `with` block.

    When Redis cannot be subscribed to, `wait_for_notice` sleeps out its timeout instead,
    and the caller falls back to reading the document at each timeout.
    """

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._client = client
        self._channel = run_end_channel(run_id)
        self._pubsub: PubSub | None = None

    def __enter__(self) -> RunEndListener:
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
        try:
            pubsub.subscribe(self._channel)
            # Redis's confirmation: from here on no notice can pass unseen, so a read of the
            # document that follows cannot miss an end between the read and the subscription.
            confirmed = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
            if confirmed is None or confirmed.get("type") != "subscribe":
                raise redis.RedisError(f"no confirmation within {SUBSCRIBE_TIMEOUT_S:g} s")
        except redis.RedisError as exc:
            logger.warning("cannot subscribe to %s (%s): watching the run by polling", self._channel, exc)
            pubsub.close()
        else:
            self._pubsub = pubsub
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None

    def wait_for_notice(self, timeout: float) -> bool:
        """Block until the run's end is announced (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self._pubsub is None:
                time.sleep(remaining)
                return False
            try:
                message: dict[str, Any] | None = self._pubsub.get_message(timeout=remaining)
            except redis.RedisError as exc:
                logger.warning("lost %s (%s): watching the run by polling", self._channel, exc)
                self._pubsub.close()
                self._pubsub = None
                continue
            if message is not None and message.get("type") == "message":
                return True
        return False
