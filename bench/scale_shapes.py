"""The shapes `bench/scale.py` measures, and what one measured run holds (`Cell`).

Each shape is a workflow at width N (see `bench/scale.py`'s docstring); `child_ids` names the
child runs a shape's parent starts, whose ids the engine fixes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench import counters
from bench.engine import line_workflow
from orchestrator.engine.child_runs import child_run_id
from workers.parameter_loop import MAX_LISTED

SHAPES = ("line", "fanout", "ff", "wait", "loop")
DEFAULT_NS = (10, 100, 1000)
HUGE_N = 10_000
FANOUT_N = 500
RAW_BESIDE = {"line": "chain", "fanout": "group", "ff": "group", "wait": "group", "loop": "group"}
CHILD_SHAPES = ("ff", "wait", "loop")
LOOP_NODE = "loop"
TARGET_GROWTH = 1.5
TARGET_FANOUT = 5.0


# -- workflows --------------------------------------------------------------------------------


def node_ids(n: int) -> list[str]:
    """The ids of a shape's N nodes (line: `bench.engine.line_workflow`'s own)."""
    return [f"n{i:05d}" for i in range(n)]


def child_workflow(name: str) -> dict[str, Any]:
    """The child of `ff` and `wait`: one `set` node."""
    return {"name": name, "nodes": [{"id": "n", "type": "set", "params": {"i": 0}}]}


def shape_workflow(shape: str, name: str, n: int, child: str) -> dict[str, Any]:
    """The workflow of one shape at width `n`."""
    if shape == "line":
        return line_workflow(name, n)
    if shape == "fanout":
        fanned = [
            {"id": i, "type": "set", "params": {"i": k}, "after": ["root"]} for k, i in enumerate(node_ids(n))
        ]
        return {"name": name, "nodes": [{"id": "root", "type": "set", "params": {"i": -1}}, *fanned]}
    if shape in ("ff", "wait"):
        mode = "fire_and_forget" if shape == "ff" else "wait"
        params = {"workflow": child, "mode": mode}
        return {
            "name": name,
            "nodes": [{"id": i, "type": "run_workflow", "params": params} for i in node_ids(n)],
        }
    if shape == "loop":
        body = {"type": "set", "params": {"value": "{{ loop_value }}"}}
        output = "list" if n <= MAX_LISTED else "summary"  # a list output takes up to MAX_LISTED
        looped = {"values": list(range(n)), "body": body, "output": output}
        loop = {"id": LOOP_NODE, "type": "parameter_loop", "params": looped}
        return {"name": name, "nodes": [loop]}
    raise ValueError(f"unknown shape {shape!r}")


def child_ids(shape: str, run_id: str, n: int) -> list[str]:
    """The run ids of a parent's N children (their ids are fixed by the engine)."""
    if shape == "loop":
        return [child_run_id(run_id, LOOP_NODE, i) for i in range(n)]
    return [child_run_id(run_id, node_id) for node_id in node_ids(n)]


# -- one measured run -------------------------------------------------------------------------


@dataclass
class Cell:
    """One measured run: what it was, how it ended, its counts."""

    kind: str  # "engine" or "raw"
    shape: str  # an engine shape, or "chain" / "group"
    n: int
    wall_s: float
    done: int  # units over (nodes, children, iterations, raw tasks)
    status: str  # how it ended: the parent run's status, "finished", or "cut off"
    counts: dict[str, int] = field(default_factory=dict)
    settled: bool = True
    notes: list[str] = field(default_factory=list)
    store_s_per_child: float | None = None  # `ff` at N=500: MongoDB's own time per child
    timeout_s: float = 0.0

    def cut_off_line(self) -> str:
        return f"cut off at {self.timeout_s:g} s ({self.done} of {self.n} done)"

    @property
    def cut_off(self) -> bool:
        return self.status == "cut off"

    def total(self, name: str) -> int:
        if name == "mongo_bytes":
            return self.counts.get(counters.MONGO_REQUEST_BYTES, 0) + self.counts.get(
                counters.MONGO_REPLY_BYTES, 0
            )
        return self.counts.get(FIGURES[name], 0)

    def per_unit(self, name: str) -> float:
        if name == "ms":
            return self.wall_s * 1000 / self.n
        return self.total(name) / self.n

    def as_json(self) -> dict[str, Any]:
        figures = {name: self.per_unit(name) for name in (*FIGURES, "mongo_bytes", "ms")}
        return asdict(self) | {"cut_off": self.cut_off, "per_unit": figures}


FIGURES = {
    "mongo_commands": counters.MONGO_COMMANDS,
    "mongo_request_bytes": counters.MONGO_REQUEST_BYTES,
    "mongo_reply_bytes": counters.MONGO_REPLY_BYTES,
    "messages": counters.MESSAGES,
    "message_bytes": counters.MESSAGE_BYTES,
    "message_header_bytes": counters.MESSAGE_HEADER_BYTES,
}
