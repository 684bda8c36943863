"""Node types used only by the tests (loaded with ORCH_PLUGINS=tests.plugins)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.engine.registry import AfterEnd, NodeContext, NodeType
from orchestrator.errors import NodeError
from orchestrator.store.handoff import SIZE_KEY


class FlakyParams(BaseModel):
    succeed_on: int = 2


def flaky(params: FlakyParams, context: NodeContext) -> dict[str, Any]:
    """Fails until attempt `succeed_on` (logging each attempt)."""
    context.logger.info("attempt %d", context.attempt)
    if context.attempt < params.succeed_on:
        raise NodeError(f"flaky: attempt {context.attempt} fails on purpose")
    return {"attempt": context.attempt}


class FailParams(BaseModel):
    message: str = "failing on purpose"
    when: bool = True


def fail(params: FailParams, context: NodeContext) -> dict[str, bool]:
    """Fails with `message` (unless `when` is false)."""
    if params.when:
        raise RuntimeError(params.message)
    return {"failed": False}


class BigParams(BaseModel):
    kib: int


def big(params: BigParams, context: NodeContext) -> str:
    """Returns a string of `kib` KiB."""
    return "x" * (params.kib * 1024)


class CountParams(BaseModel):
    key: str


def count(params: CountParams, context: NodeContext) -> int:
    """Counts its executions in MongoDB (to prove a node body ran once)."""
    doc = context.store.db["test_counts"].find_one_and_update(
        {"_id": params.key}, {"$inc": {"n": 1}}, upsert=True, return_document=True
    )
    assert doc is not None  # an upsert returning the document after the update
    return int(doc["n"])


class OutboxParams(BaseModel):
    key: str
    kib: int = 0


def outbox(params: OutboxParams, context: NodeContext) -> AfterEnd:
    """A pure node with an effect after its end: `<key>:sent` or `<key>:dropped` counted, its
    output `kib` KiB of text."""

    def counted(suffix: str) -> Callable[[], None]:
        def effect() -> None:
            count(CountParams(key=f"{params.key}:{suffix}"), context)

        return effect

    return AfterEnd(output="x" * (params.kib * 1024), send=counted("sent"), drop=counted("dropped"))


class TickParams(BaseModel):
    key: str
    seconds: float


def tick(params: TickParams, context: NodeContext) -> int:
    """Counts a tick in MongoDB every 0.1 s for `seconds` (to see when a node stops working)."""
    end = time.monotonic() + params.seconds
    ticks = 0
    while time.monotonic() < end:
        context.store.db["test_counts"].update_one(
            {"_id": params.key}, {"$inc": {"n": 1}, "$set": {"at": time.time()}}, upsert=True
        )
        ticks += 1
        time.sleep(0.1)
    return ticks


class NotJsonParams(BaseModel):
    pass


def not_json(params: NotJsonParams, context: NodeContext) -> object:
    """Returns something that is not JSON."""
    return {1, 2}


class BlockParams(BaseModel):
    seconds: float


def block(params: BlockParams, context: NodeContext) -> str:
    """Sleeps without looking at its deadline (only a time limit can stop it)."""
    time.sleep(params.seconds)
    return "woke up"


class GateParams(BaseModel):
    path: str


def gate(params: GateParams, context: NodeContext) -> str:
    """A pure node that says it has started (`<path>.entered`), then waits for the file
    `path`: a test opens it when it has set up what the node's end must meet."""
    Path(f"{params.path}.entered").touch()
    deadline = time.monotonic() + 60
    while not Path(params.path).exists():
        if time.monotonic() > deadline:
            raise NodeError(f"the gate {params.path} was never opened")
        time.sleep(0.02)
    return "opened"


class PeekParams(BaseModel):
    pass


def peek(params: PeekParams, context: NodeContext) -> dict[str, Any]:
    """A pure node that tells what it ran from: a snapshot handed on, or the document read."""
    return {"handed_on": SIZE_KEY in context.run, "saw": sorted(context.outputs)}


def peek_running(params: PeekParams, context: NodeContext) -> dict[str, Any]:
    """A node that is not pure: what it ran from, and its own status in the store meanwhile."""
    own = context.store.get_run_document(context.run_id)["nodes"][context.node_id]["status"]
    return {"handed_on": SIZE_KEY in context.run, "saw": sorted(context.outputs), "own_status": own}


def parent_node(params: PeekParams, context: NodeContext) -> str | None:
    """The status, in its parent run's document as this node runs, of the node that started
    this run (None for a run without a parent)."""
    parent_id, node_id = context.run.get("parent_run_id"), context.run.get("parent_node_id")
    if not parent_id or not node_id:
        return None
    return str(context.store.get_run_document(str(parent_id))["nodes"][str(node_id)]["status"])


class ChattyParams(BaseModel):
    lines: int = 3
    every_s: float = 0.0
    width: int = 20
    say: str = ""


def chatty(params: ChattyParams, context: NodeContext) -> int:
    """Logs `lines` lines (`width` characters of text each), one every `every_s` seconds, through
    its node logger, a library's logger (a warning) and, for the last, with a traceback."""
    library = logging.getLogger("some.library")
    if params.say:
        context.logger.info("saying %s", params.say)
    for index in range(params.lines):
        context.logger.info("line %d %s", index, "x" * params.width)
        if params.every_s:
            time.sleep(params.every_s)
    library.warning("a library warns")
    try:
        raise ValueError("shown with its traceback")
    except ValueError:
        context.logger.exception("the last line")
    return params.lines


class FailUntilParams(BaseModel):
    key: str
    runs: int = 1


def fail_until(params: FailUntilParams, context: NodeContext) -> int:
    """Fails its first `runs` executions (counted in MongoDB under `key`, across runs)."""
    n = count(CountParams(key=params.key), context)
    if n <= params.runs:
        raise NodeError(f"execution {n} of '{params.key}' fails on purpose")
    return n


node_types = [
    NodeType(name="chatty", params=ChattyParams, run=chatty),
    NodeType(name="fail_until", params=FailUntilParams, run=fail_until),
    NodeType(name="block", params=BlockParams, run=block),
    NodeType(name="flaky", params=FlakyParams, run=flaky),
    NodeType(name="fail", params=FailParams, run=fail),
    NodeType(name="big", params=BigParams, run=big),
    NodeType(name="count", params=CountParams, run=count),
    NodeType(name="tick", params=TickParams, run=tick),
    NodeType(name="not_json", params=NotJsonParams, run=not_json),
    NodeType(name="peek", params=PeekParams, run=peek, pure=True),
    NodeType(name="peek_running", params=PeekParams, run=peek_running),
    NodeType(name="parent_node", params=PeekParams, run=parent_node),
    NodeType(name="outbox", params=OutboxParams, run=outbox, pure=True),
    NodeType(name="pure_flaky", params=FlakyParams, run=flaky, pure=True),
    NodeType(name="gate", params=GateParams, run=gate, pure=True),
]
