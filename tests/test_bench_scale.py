"""bench/scale.py, its smallest case for real, and the counting it rests on (bench/counters.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kombu.utils.json import dumps as kombu_dumps

from bench import counters

ROOT = Path(__file__).resolve().parent.parent
N = 10


@pytest.fixture(scope="module")
def smallest_run() -> dict[str, Any]:
    """`bench/scale.py --n 10 --json`: every shape once, on private services."""
    done = subprocess.run(
        [sys.executable, "bench/scale.py", "--n", str(N), "--timeout", "30", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, Any] = dict(json.loads(done.stdout))
    return figures


def _cell(figures: dict[str, Any], kind: str, shape: str) -> dict[str, Any]:
    found = [c for c in figures["cells"] if c["kind"] == kind and c["shape"] == shape and c["n"] == N]
    assert len(found) == 1, f"{kind} {shape}: {len(found)} cells"
    cell: dict[str, Any] = found[0]
    return cell


@pytest.mark.timeout(120)
def test_scale_smallest_case_when_run_then_every_cell_finishes_and_settles(
    smallest_run: dict[str, Any],
) -> None:
    for shape in ("line", "fanout", "ff", "wait", "loop"):
        cell = _cell(smallest_run, "engine", shape)
        assert (cell["status"], cell["cut_off"], cell["settled"]) == ("finished", False, True), cell["notes"]
        assert cell["done"] == N
        assert cell["per_unit"]["mongo_commands"] >= 1, shape  # each unit records its end at least
        assert cell["per_unit"]["messages"] >= 1, shape  # each unit is at least one task message
        assert cell["per_unit"]["mongo_bytes"] > 0 and cell["per_unit"]["message_bytes"] > 0


@pytest.mark.timeout(120)
def test_scale_raw_baselines_when_counted_then_one_message_per_task_and_no_mongo(
    smallest_run: dict[str, Any],
) -> None:
    for shape in ("chain", "group"):
        counts = _cell(smallest_run, "raw", shape)["counts"]
        assert counts.get(counters.MESSAGES) == N, shape  # exact: the client's and the worker's
        assert counts.get(f"{counters.BY_TASK}bench.noop") == N
        assert counters.MONGO_COMMANDS not in counts


@pytest.mark.timeout(120)
def test_scale_per_unit_figures_when_reported_then_they_are_the_totals_over_n(
    smallest_run: dict[str, Any],
) -> None:
    cell = _cell(smallest_run, "engine", "ff")
    counts = cell["counts"]
    by_command = sum(v for k, v in counts.items() if k.startswith(counters.BY_COMMAND))
    assert by_command == counts[counters.MONGO_COMMANDS]
    mongo_bytes = counts[counters.MONGO_REQUEST_BYTES] + counts[counters.MONGO_REPLY_BYTES]
    assert cell["per_unit"]["mongo_bytes"] == pytest.approx(mongo_bytes / N)


def test_tally_when_uncounted_or_taken_then_counts_are_left_out_and_emptied() -> None:
    tally = counters.Tally()  # no hash: nothing is pushed
    tally.add({counters.MESSAGES: 2})
    with tally.uncounted():
        tally.add({counters.MESSAGES: 5})
    assert tally.take() == {counters.MESSAGES: 2}
    assert tally.take() == {}


def test_publish_counter_when_a_message_goes_out_then_its_body_is_measured_as_kombu_json() -> None:
    tally = counters.Tally()
    body = ((), {"run_id": "r", "node": {"id": "n", "type": "set"}}, {"chain": None})
    counters.MessageCounter(tally).published(sender="workers.set", body=body, headers={"task": "workers.set"})
    counts = tally.take()
    assert counts[counters.MESSAGES] == 1
    assert counts[counters.MESSAGE_BYTES] == len(kombu_dumps(body).encode())  # type: ignore[no-untyped-call]
    assert counts[f"{counters.BYTES_BY_TASK}workers.set"] == counts[counters.MESSAGE_BYTES]
