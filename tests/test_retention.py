"""Run retention: `runs prune`, `runs delete`, `Orchestrator.prune_runs` / `delete_runs` and the
beat task of `ORCH_RETENTION_DAYS` remove whole trees that are over, with their node logs and
wait records, and never a run that is still active."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import Orchestrator, RunStillActive
from orchestrator.cli import main
from orchestrator.cli.retention import parse_age
from orchestrator.constants import NODE_LOGS, PRUNE_TASK, RunStatus
from orchestrator.engine.factory import create_app
from orchestrator.errors import OrchestratorError, RunNotFound
from orchestrator.settings import Settings
from orchestrator.store import retention
from orchestrator.store.models import epoch_ms
from orchestrator.store.retention import prune
from tests.conftest import new_run, workflow

OLD = datetime.now(UTC) - timedelta(days=40)


def tree(
    orch: Orchestrator, statuses: dict[str, RunStatus], created_at: datetime = OLD, wf: str = "W"
) -> str:
    """A top-level run and runs under it, keyed by a path (`""` the top, `c` a child of it,
    `c.g` a grandchild), each in its status; the top's id."""
    ids: dict[str, str] = {}
    for path in sorted(statuses, key=len):
        parent = ids.get(path.rpartition(".")[0] if "." in path else "") if path else None
        lineage: dict[str, Any] = (
            {"parent_run_id": parent, "parent_node_id": "a", "root_run_id": ids[""]} if path else {}
        )
        run_id = f"{parent}.{path.rpartition('.')[2]}" if parent else None
        ids[path] = new_run(orch.store, run_id=run_id, workflow=wf, created_at=created_at, **lineage)
        orch.store.runs.update_one({"_id": ids[path]}, {"$set": {"status": statuses[path]}})
    return ids[""]


def with_records(orch: Orchestrator, run_id: str) -> None:
    """A node log and a wait record (with a chunk of values) for node `a` of `run_id`."""
    orch.store.db[NODE_LOGS].insert_one(
        {"_id": f"{run_id}/a/1", "run_id": run_id, "node_id": "a", "attempt": 1}
    )
    orch.store.wait_records.put(run_id, "a", {"run_id": "x", "token": "t"})
    orch.store.wait_records.put_items(run_id, "a", [1, 2, 3])


def ids_left(orch: Orchestrator) -> set[str]:
    return {str(doc["_id"]) for doc in orch.store.runs.find({}, {"_id": 1})}


def test_a_prune_removes_old_trees_that_are_over_whole_with_their_records(orch: Orchestrator) -> None:
    gone = tree(orch, {"": "finished", "c": "failed", "c.g": "finished"})
    active_child = tree(orch, {"": "finished", "c": "running"})  # a fire-and-forget child still going
    running = tree(orch, {"": "running"})
    recent = tree(orch, {"": "finished"}, created_at=datetime.now(UTC))
    for run_id in (gone, f"{gone}.c", recent):
        with_records(orch, run_id)

    removed = orch.prune_runs(timedelta(days=30))

    assert (removed.trees, removed.runs, removed.kept_active) == (1, 3, 1)
    assert (removed.node_logs, removed.wait_records) == (2, 2)
    assert removed.sample == [gone]
    assert ids_left(orch) == {active_child, f"{active_child}.c", running, recent}
    assert orch.store.db[NODE_LOGS].distinct("run_id") == [recent]
    assert orch.store.wait_records.get(recent, "a") is not None
    assert orch.store.wait_records.get(gone, "a") is None
    assert orch.store.wait_records.waits.database["wait_items"].distinct("of_run") == [recent]


def test_a_prune_by_workflow_and_status_and_a_dry_run_that_removes_nothing(orch: Orchestrator) -> None:
    failed = tree(orch, {"": "failed", "c": "finished"}, wf="Daily")
    finished = tree(orch, {"": "finished"}, wf="Daily")
    other = tree(orch, {"": "failed"}, wf="Other")

    counted = orch.prune_runs(timedelta(days=30), workflow="Daily", statuses=["failed"], dry_run=True)
    assert (counted.trees, counted.runs, counted.dry_run, counted.node_logs) == (1, 2, True, 0)
    assert len(ids_left(orch)) == 4

    removed = orch.prune_runs(timedelta(days=30), workflow="Daily", statuses=["failed"])
    assert (removed.trees, removed.runs) == (1, 2)
    assert ids_left(orch) == {finished, other}
    assert failed not in ids_left(orch)
    assert orch.prune_runs(timedelta(days=50)).trees == 0  # nothing that old


def test_a_prune_looks_at_limit_top_level_runs_the_oldest_first(orch: Orchestrator) -> None:
    ages = [2, 0, 4, 1, 3]  # minutes before OLD, stored in no order of age
    runs = {age: tree(orch, {"": "finished"}, created_at=OLD - timedelta(minutes=age)) for age in ages}
    removed = prune(orch.store, datetime.now(UTC), limit=2)
    assert removed.trees == 2
    assert ids_left(orch) == {runs[0], runs[1], runs[2]}  # the two oldest went


def test_a_prune_reports_its_progress_batch_by_batch(
    orch: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)
    for n in range(4):
        tree(orch, {"": "finished", "c": "finished"}, created_at=OLD - timedelta(minutes=n))
    tree(orch, {"": "finished", "c": "pending"}, created_at=OLD - timedelta(minutes=9))  # the oldest
    seen: list[tuple[int, int, int]] = []
    removed = orch.prune_runs(
        timedelta(days=30), on_progress=lambda done, found: seen.append((done.trees, done.kept_active, found))
    )
    assert seen == [(1, 1, 5), (3, 1, 5), (4, 1, 5)]
    assert (removed.trees, removed.runs, removed.kept_active) == (4, 8, 1)


def test_a_prune_refuses_statuses_of_runs_not_over_and_negative_ages(orch: Orchestrator) -> None:
    with pytest.raises(OrchestratorError, match="only runs that are over"):
        orch.prune_runs(timedelta(days=1), statuses=["running"])
    with pytest.raises(OrchestratorError, match="negative"):
        orch.prune_runs(timedelta(days=-1))
    with pytest.raises(OrchestratorError, match="must be a string"):
        orch.prune_runs(timedelta(days=1), workflow={"$ne": None})  # type: ignore[arg-type]


def test_a_delete_removes_whole_trees_or_refuses_all(orch: Orchestrator) -> None:
    done = tree(orch, {"": "finished", "c": "finished"})
    busy = tree(orch, {"": "finished", "c": "running"})
    with pytest.raises(RunStillActive, match=rf"'{busy}\.c' in the tree of '{busy}'.*cancel it first"):
        orch.delete_runs([done, busy])
    with pytest.raises(
        OrchestratorError, match=rf"started by run '{done}': remove its top-level run '{done}'"
    ):
        orch.delete_runs([f"{done}.c"])
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        orch.delete_runs([done, "nope"])
    assert len(ids_left(orch)) == 4  # all or none

    removed = orch.delete_runs([done])
    assert (removed.trees, removed.runs) == (1, 2)
    assert ids_left(orch) == {busy, f"{busy}.c"}


def test_ages_on_the_command_line() -> None:
    assert parse_age("30d") == parse_age("30") == timedelta(days=30)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age(" 1.5 W") == timedelta(weeks=1.5)
    assert parse_age("90m") == timedelta(minutes=90) and parse_age("3600s") == timedelta(hours=1)


@pytest.mark.usefixtures("worker")
def test_the_commands_remove_real_runs_and_ask_first(cli: CliRunner, orch: Orchestrator) -> None:
    orch.register(workflow("Child", {"id": "n", "type": "set", "params": {"v": 1}}))
    orch.register(
        workflow(
            "Parent", {"id": "c", "type": "run_workflow", "params": {"workflow": "Child", "mode": "wait"}}
        )
    )
    first, second = orch.run("Parent", timeout=30), orch.run("Parent", timeout=30)
    assert first.status == second.status == "finished"
    assert orch.store.wait_records.get(first.id, "c") is not None
    long_ago = OLD - timedelta(days=1)
    orch.store.runs.update_many({}, {"$set": {"created_at": long_ago, "created_ms": epoch_ms(long_ago)}})

    def invoke(*args: str) -> tuple[int, str]:
        result = cli.invoke(main, ["runs", *args])
        return result.exit_code, result.output

    code, output = invoke("prune", "--older-than", "30d")
    assert code == 2 and "not asked, input is not a terminal; add --yes" in output
    code, output = invoke("prune", "--older-than", "30d", "--dry-run")
    assert code == 0 and "would remove 2 run trees (4 runs in all)" in output
    assert len(ids_left(orch)) == 4
    code, output = invoke("prune", "--older-than", "soon", "--yes")
    assert code == 2 and "'soon' is not an age" in output

    code, output = invoke("delete", first.id, "--yes", "--json")
    assert code == 0, output
    assert json.loads(output) | {"sample": []} == json.loads(output) | {
        "trees": 1, "runs": 2, "wait_records": 1, "kept_active": 0, "dry_run": False, "sample": []
    }  # fmt: skip
    assert orch.store.wait_records.get(first.id, "c") is None
    code, output = invoke("delete", f"{second.id}.c", "--yes")
    assert code == 1 and "remove its top-level run" in output
    code, output = invoke("prune", "--older-than", "30d", "--yes")
    assert code == 0 and "removed 1 run tree (2 runs in all)" in output
    assert ids_left(orch) == set()


def test_the_beat_task_removes_runs_past_the_retention_setting(
    settings: Settings, orch: Orchestrator
) -> None:
    plain = create_app(settings)
    kept_for_30 = create_app(settings.model_copy(update={"retention_days": 30.0}))
    try:
        assert "orchestrator-prune-runs" not in plain.conf.beat_schedule  # unset: runs stay
        entry = kept_for_30.conf.beat_schedule["orchestrator-prune-runs"]
        assert entry["task"] == PRUNE_TASK and entry["kwargs"] == {"days": 30.0}  # workers need not know it
        old = tree(orch, {"": "finished", "c": "finished"})
        kept = tree(orch, {"": "finished"}, created_at=datetime.now(UTC) - timedelta(days=29))
        assert plain.tasks[PRUNE_TASK].run() == {}  # set neither in the message nor on the worker
        assert kept_for_30.tasks[PRUNE_TASK].run()["trees"] == 1
        assert ids_left(orch) == {kept}
        assert old not in ids_left(orch)
        assert plain.tasks[PRUNE_TASK].run(days=1.0)["trees"] == 1  # as beat sends it
        assert ids_left(orch) == set()
    finally:
        plain.close()
        kept_for_30.close()
