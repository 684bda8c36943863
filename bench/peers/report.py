"""The peer comparison's figures and its table: one column per engine, one row per measure."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LABEL_WIDTH = 52
CELL_WIDTH = 22


@dataclass(frozen=True)
class Figures:
    """One engine's samples of the three measures, in seconds."""

    triggers: list[float]  # parent asks -> the child's first line
    waits: list[dict[str, float]]  # elapsed, overhead (elapsed - 2 s), start, wake
    fanout: dict[str, float]  # children, stamped (to the last end stored), observed (by the client)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Figures:
        """From the JSON that `prefect_side.py measure` prints."""
        return cls(
            triggers=[float(t["trigger"]) for t in doc["triggers"]],
            waits=[{k: float(v) for k, v in w.items()} for w in doc["waits"]],
            fanout={k: float(v) for k, v in doc["fanout"].items()},
        )


def _median_min(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f})"


def _wait_part(key: str) -> Callable[[Figures], str]:
    return lambda f: f"{statistics.median(w[key] for w in f.waits):.3f}"


ROWS: list[tuple[str, Callable[[Figures], str]]] = [
    ("1. parent asks -> child's first line", lambda f: _median_min(f.triggers)),
    (
        "2. wait on a 2 s child: overhead = elapsed - 2 s",
        lambda f: _median_min([w["overhead"] for w in f.waits]),
    ),
    ("   of which: parent asks -> child's first line", _wait_part("start")),
    ("   of which: child's last line -> parent resumes", _wait_part("wake")),
    ("3. N fire-and-forget children: all done (wall)", lambda f: f"{f.fanout['stamped']:.2f}"),
    ("   the same, as the measuring client saw it", lambda f: f"{f.fanout['observed']:.2f}"),
]


def table(columns: Mapping[str, Figures]) -> str:
    """The rows of every measure, one column per engine; seconds, medians (min) of the samples."""
    lines = [
        f"{'seconds; medians (min) of the samples':{LABEL_WIDTH}}"
        + "".join(f"{n:>{CELL_WIDTH}}" for n in columns)
    ]
    for label, cell in ROWS:
        lines.append(f"{label:{LABEL_WIDTH}}" + "".join(f"{cell(f):>{CELL_WIDTH}}" for f in columns.values()))
    counts = {(len(f.triggers), len(f.waits), int(f.fanout["children"])) for f in columns.values()}
    shown = "; ".join(f"{t} trigger samples, {w} waits, N = {n}" for t, w, n in sorted(counts))
    lines.append(f"({shown})")
    return "\n".join(lines)
