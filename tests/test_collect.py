"""collect on real workers: it waits for runs started elsewhere, in any order, and reports each."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.constants import WAIT_ITEMS
from tests.conftest import as_dict, not_none, wait_for, workflow

pytestmark = pytest.mark.usefixtures("worker")


def register_sleeper_and_collector(orch: Orchestrator, **collect: Any) -> None:
    orch.register(
        workflow(
            "Sleeper",
            {"id": "nap", "type": "sleep", "params": {"seconds": "{{ seconds }}", "output": "{{ seconds }}"}},
            variables={"seconds": 0},
            output="{{ nodes.nap.output.output }}",
        )
    )
    params = {"run_ids": "{{ ids }}", "poll_interval_s": 0.1, **collect}
    orch.register(
        workflow("Gather", {"id": "gather", "type": "collect", "params": params}, variables={"ids": []})
    )


def test_runs_that_end_out_of_order_are_reported_in_the_order_given(orch: Orchestrator) -> None:
    register_sleeper_and_collector(orch)
    ids = [orch.trigger("Sleeper", {"seconds": s}) for s in (1.2, 0, 0.3)]
    run = orch.run("Gather", {"ids": [*ids, None]}, timeout=30)
    assert run.status == "finished"
    output = as_dict(run.nodes["gather"].output)
    assert [(r["run_id"], r["status"], r["results"]) for r in output["runs"]] == [
        (ids[0], "finished", 1.2),
        (ids[1], "finished", 0),
        (ids[2], "finished", 0.3),
        (None, "missing", None),
    ]
    assert (output["finished"], output["failed"], output["pending"]) == (3, 0, 0)


def test_a_poll_looks_past_the_runs_already_over_only(orch: Orchestrator) -> None:
    """The record's cursor stops at the first run still going: the runs before it are not read
    again, and the collector ends once the slow one does."""
    register_sleeper_and_collector(orch)
    ids = [orch.trigger("Sleeper", {"seconds": s}) for s in (0, 0, 2, 0)]
    gather = orch.trigger("Gather", {"ids": ids})

    def cursor() -> int | None:
        record = orch.store.wait_records.get(gather, "gather")
        return record["data"]["over_before"] if record and record["data"]["over_before"] == 2 else None

    assert wait_for(cursor, timeout=20, what="the cursor past the two quick runs") == 2
    assert orch.store.db[WAIT_ITEMS].count_documents({"of_run": gather}) == 1
    run = orch.wait(gather, timeout=30)
    output = as_dict(run.nodes["gather"].output)
    assert [r["status"] for r in output["runs"]] == ["finished"] * 4
    assert not_none(orch.store.wait_records.get(gather, "gather"))["data"]["over_before"] == 4


def test_the_timeout_reports_the_runs_still_going_and_the_unknown_ones(orch: Orchestrator) -> None:
    register_sleeper_and_collector(orch, timeout_s=0.5)
    slow, quick = orch.trigger("Sleeper", {"seconds": 3}), orch.trigger("Sleeper", {"seconds": 0})
    run = orch.run("Gather", {"ids": [slow, quick, "no-such-run"]}, timeout=30)
    output = as_dict(run.nodes["gather"].output)
    assert [r["status"] for r in output["runs"]] == ["running", "finished", "missing"]
    assert (output["finished"], output["pending"]) == (1, 1)
