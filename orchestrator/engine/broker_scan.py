"""Which runs have a message on the broker: in a queue, or held by a worker (Redis's `unacked`).

The reconciler asks this before it sends the rest of a stalled run again: a run whose
messages are merely queued behind a backlog is not stalled. Every task message of a run
carries `run_id` (and, once the run was sent again, `epoch`) in its kwargs, and so do the
signatures it carries for later (a chain's next steps, a chord's body), so one pass over the
messages tells which epochs of which runs still have a message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import redis

UNACKED_KEY = "unacked"  # kombu's Redis transport: messages delivered and not acknowledged


def runs_with_messages(client: redis.Redis) -> set[tuple[str, int]]:
    """`(run_id, epoch)` of every run that has a message on the broker at `client`."""
    found: set[tuple[str, int]] = set()
    for raw in _messages(client):
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if isinstance(message, list) and message:  # an `unacked` entry: [message, exchange, key]
            message = message[0]
        if isinstance(message, dict):
            found.update(_runs_in(_body(message)))
    return found


def _messages(client: redis.Redis) -> Iterator[bytes | str]:
    for key in client.scan_iter(count=1000, _type="list"):
        yield from client.lrange(key, 0, -1)
    yield from client.hvals(UNACKED_KEY)


def _body(message: dict[str, Any]) -> Any:
    body = message.get("body")
    if not isinstance(body, str):
        return None
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body).decode()
        except ValueError:
            return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _runs_in(value: Any) -> Iterator[tuple[str, int]]:
    """Every `(run_id, epoch)` named by a kwargs mapping anywhere in a message body."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            run_id = item.get("run_id")
            if isinstance(run_id, str):
                epoch = item.get("epoch", 0)
                yield run_id, epoch if isinstance(epoch, int) else 0
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
