"""Schedules: slot computation (timezones, DST), the slot planner, and real `orchestrator beat`
processes firing runs on a real worker.

The end-to-end tests use croniter's 6-field crons (seconds last) to see several slots in a few
seconds. Workflow files accept only 5 fields (`ScheduleSpec`), so those tests register the
workflow with a 5-field cron and then put the 6-field one in its `workflows` document, which
is what beat reads.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator import Orchestrator
from orchestrator.engine.schedules import (
    SlotPlanner,
    WorkflowSchedule,
    WorkflowScheduler,
    run_id_for,
    schedule_of,
)
from orchestrator.services.embedded import stop_process
from orchestrator.settings import Settings
from orchestrator.store.models import utcnow
from tests.conftest import ROOT, WorkerProcess, wait_for, worker_env, workflow

REFRESH_S = "0.3"


def at(text: str) -> datetime:
    """An aware datetime from ISO text (`Z` for UTC)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def schedule(
    cron: str, timezone: str = "UTC", updated_at: datetime | None = None, **variables: Any
) -> WorkflowSchedule:
    return WorkflowSchedule(
        workflow="Report", cron=cron, timezone=timezone, variables=variables, updated_at=updated_at
    )


def slots(s: WorkflowSchedule, after: datetime, n: int) -> list[str]:
    found = []
    for _ in range(n):
        after = s.next_slot(after)
        found.append(after.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return found


# -- slots ---------------------------------------------------------------------------------


def test_next_slot_is_computed_in_the_schedules_timezone() -> None:
    berlin = schedule("0 8 * * *", "Europe/Berlin")
    assert slots(berlin, at("2024-05-01T00:00:00Z"), 1) == ["2024-05-01T06:00:00Z"]  # CEST
    assert slots(berlin, at("2024-01-10T00:00:00Z"), 1) == ["2024-01-10T07:00:00Z"]  # CET
    tokyo = schedule("30 9 * * 1-5", "Asia/Tokyo")  # weekdays 09:30 in Tokyo
    assert slots(tokyo, at("2024-05-03T01:00:00Z"), 2) == ["2024-05-06T00:30:00Z", "2024-05-07T00:30:00Z"]


def test_next_slot_is_strictly_after_and_latest_slot_includes_now() -> None:
    daily = schedule("0 8 * * *")
    assert daily.next_slot(at("2024-05-01T08:00:00Z")) == at("2024-05-02T08:00:00Z")
    assert daily.latest_slot(at("2024-05-01T08:00:00Z")) == at("2024-05-01T08:00:00Z")
    assert daily.latest_slot(at("2024-05-01T07:59:59.999Z")) == at("2024-04-30T08:00:00Z")
    every_second = schedule("* * * * * *")
    assert every_second.latest_slot(at("2024-05-01T08:00:00.700Z")) == at("2024-05-01T08:00:00Z")


def test_a_local_time_skipped_by_spring_forward_fires_when_the_clock_jumps() -> None:
    # Europe/Berlin, 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
    s = schedule("30 2 * * *", "Europe/Berlin")
    assert slots(s, at("2024-03-30T12:00:00Z"), 3) == [
        "2024-03-31T01:00:00Z",  # the jump
        "2024-04-01T00:30:00Z",  # 02:30 CEST
        "2024-04-02T00:30:00Z",
    ]


def test_a_local_time_repeated_by_fall_back_fires_once() -> None:
    # Europe/Berlin, 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    s = schedule("30 2 * * *", "Europe/Berlin")
    assert slots(s, at("2024-10-26T12:00:00Z"), 2) == ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
    assert s.latest_slot(at("2024-10-27T01:45:00Z")) == at("2024-10-27T00:30:00Z")  # after the repeat
    half_hourly = schedule("*/30 * * * *", "Europe/Berlin")
    assert slots(half_hourly, at("2024-10-26T23:45:00Z"), 4) == [
        "2024-10-27T00:00:00Z",  # 02:00 CEST
        "2024-10-27T00:30:00Z",  # 02:30 CEST
        "2024-10-27T02:00:00Z",  # 03:00 CET: the repeated 02:00 and 02:30 CET do not fire again
        "2024-10-27T02:30:00Z",
    ]


def test_schedule_refuses_a_bad_cron_or_timezone() -> None:
    with pytest.raises(ValidationError, match="not a valid cron"):
        schedule("61 * * * *")
    with pytest.raises(ValidationError, match="IANA time zone"):
        schedule("0 8 * * *", "Mars/Olympus_Mons")
    with pytest.raises(ValidationError, match="not a valid cron"):
        schedule("* * * * * * 2020")  # croniter's year field: a schedule that ends
    with pytest.raises(ValidationError, match="never fires"):
        schedule("0 0 30 2 *")


def test_run_id_is_the_same_for_a_slot_in_any_timezone_and_differs_by_workflow() -> None:
    slot = at("2024-05-01T06:00:00Z")
    assert run_id_for("nightly", slot) == "nightly@2024-05-01T06:00:00Z"
    assert run_id_for("nightly", slot.astimezone(schedule("0 8 * * *", "Europe/Berlin").zone)) == (
        "nightly@2024-05-01T06:00:00Z"
    )
    spaced, dashed = run_id_for("Price Summary", slot), run_id_for("Price-Summary", slot)
    assert spaced.startswith("Price-Summary-") and spaced.endswith("@2024-05-01T06:00:00Z")
    assert dashed == "Price-Summary@2024-05-01T06:00:00Z" and spaced != dashed


def test_schedule_of_reads_a_workflows_document() -> None:
    updated = at("2024-05-01T00:00:00Z")
    doc = {
        "_id": "R",
        "spec": {"schedule": {"cron": "0 8 * * *", "variables": {"a": 1}}},
        "updated_at": updated,
    }
    read = schedule_of(doc)
    assert read is not None and read.workflow == "R" and read.variables == {"a": 1}
    assert read.timezone == "UTC" and read.updated_at == updated
    assert schedule_of({"_id": "R", "spec": {"schedule": None}}) is None


# -- the planner ---------------------------------------------------------------------------


def test_planner_fires_only_the_latest_slot_missed_while_beat_was_down() -> None:
    planner = SlotPlanner()
    now = at("2024-05-05T09:30:00Z")
    planner.update([schedule("0 8 * * *", updated_at=at("2024-05-01T12:00:00Z"))], now)
    assert [slot for _, slot in planner.due(now)] == [at("2024-05-05T08:00:00Z")]
    assert planner.due(now) == []
    assert planner.next_due() == at("2024-05-06T08:00:00Z")


def test_planner_does_not_fire_a_slot_from_before_the_workflow_was_applied() -> None:
    planner = SlotPlanner()
    now = at("2024-05-05T09:30:00Z")
    planner.update([schedule("0 8 * * *", updated_at=at("2024-05-05T09:00:00Z"))], now)
    assert planner.due(now) == []
    assert planner.next_due() == at("2024-05-06T08:00:00Z")


def test_planner_follows_changes_and_removals() -> None:
    planner = SlotPlanner()
    applied = at("2024-05-01T07:00:00Z")
    planner.update([schedule("0 8 * * *", updated_at=applied, v=1)], applied)
    [(fired, slot)] = planner.due(at("2024-05-01T08:00:01Z"))
    assert slot == at("2024-05-01T08:00:00Z") and fired.variables == {"v": 1}
    # Applied again at 08:00:00.5 with other variables: same timing, the count goes on.
    planner.update([schedule("0 8 * * *", updated_at=at("2024-05-01T08:00:00.5Z"), v=2)], applied)
    assert planner.next_due() == at("2024-05-02T08:00:00Z")
    # A new cron counts from the change.
    planner.update([schedule("0 12 * * *", updated_at=at("2024-05-01T12:30:00Z"))], applied)
    assert planner.next_due() == at("2024-05-02T12:00:00Z")
    planner.update([], applied)
    assert planner.next_due() is None and planner.due(at("2024-06-01T00:00:00Z")) == []


# -- firing, in process --------------------------------------------------------------------


def install(
    orch: Orchestrator,
    name: str,
    cron: str,
    variables: dict[str, Any] | None = None,
    updated_at: datetime | None = None,
    node: dict[str, Any] | None = None,
) -> None:
    """Register a scheduled workflow, then give its document `cron` (which may have 6 fields)."""
    node = node or {"id": "echo", "type": "set", "params": {"v": "{{ v }}"}}
    orch.register(
        workflow(
            name,
            node,
            variables={"v": "default"},
            schedule={"cron": "* * * * *", "variables": variables or {}},
        )
    )
    doc = orch.store.workflows.find_one({"_id": name})
    assert doc is not None
    doc["spec"]["schedule"]["cron"] = cron
    doc["updated_at"] = updated_at or utcnow()
    orch.store.workflows.replace_one({"_id": name}, doc)  # whole documents keep datetimes (nx-27017)


@pytest.mark.usefixtures("worker")
def test_firing_a_slot_twice_starts_one_run(orch: Orchestrator) -> None:
    install(orch, "Once", "0 8 * * *", {"v": "scheduled"})
    scheduler = WorkflowScheduler(orch.app, lazy=True)
    s = schedule_of(orch.store.workflows.find_one({"_id": "Once"}) or {})
    assert s is not None
    slot = at("2024-05-01T08:00:00Z")
    first, second = scheduler.fire(s, slot), scheduler.fire(s, slot)
    assert first == second == "Once@2024-05-01T08:00:00Z"
    run = orch.wait(first, timeout=20)
    assert run.status == "finished" and run.results == {"echo": {"v": "scheduled"}}
    assert run.trigger == {
        "type": "schedule",
        "scheduled_for": "2024-05-01T08:00:00+00:00",
        "cron": "0 8 * * *",
        "timezone": "UTC",
    }
    assert len(orch.list_runs(workflow="Once")) == 1


def test_a_slot_of_a_removed_or_retimed_workflow_does_not_fire(orch: Orchestrator) -> None:
    install(orch, "Moving", "0 8 * * *")
    scheduler = WorkflowScheduler(orch.app, lazy=True)
    s = schedule_of(orch.store.workflows.find_one({"_id": "Moving"}) or {})
    assert s is not None
    install(orch, "Moving", "0 9 * * *")
    assert scheduler.fire(s, at("2024-05-01T08:00:00Z")) is None
    orch.store.delete_workflow("Moving")
    assert scheduler.fire(s, at("2024-05-01T08:00:00Z")) is None
    assert orch.list_runs(workflow="Moving") == []


def test_refresh_skips_a_schedule_beat_cannot_use_and_keeps_the_others(orch: Orchestrator) -> None:
    install(orch, "Good", "0 8 * * *")
    install(orch, "Bad", "0 8 * * *")
    doc = orch.store.workflows.find_one({"_id": "Bad"})
    assert doc is not None
    doc["spec"]["schedule"]["timezone"] = "Nowhere/Land"
    orch.store.workflows.replace_one({"_id": "Bad"}, doc)
    orch.register(workflow("Unscheduled", {"id": "a", "type": "set"}))
    scheduler = WorkflowScheduler(orch.app, lazy=True)
    scheduler.refresh()
    assert set(scheduler.planner.tracked) == {"Good"}


# -- real beat processes -------------------------------------------------------------------


class BeatProcess:
    """An `orchestrator beat` subprocess with a short refresh interval, logging to a file."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.log = settings.home / f"{name}.log"
        env = worker_env(settings, ORCH_SCHEDULE_REFRESH_S=REFRESH_S)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "beat", "--loglevel=INFO"],
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> BeatProcess:
        def started() -> bool:
            assert self.process.poll() is None, f"beat exited: {self.text()[-2000:]}"
            return "beat: Starting..." in self.text()

        wait_for(started, timeout, f"beat to start ({self.log})")
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


@pytest.fixture(scope="module")
def beats(settings: Settings, worker: WorkerProcess) -> Iterator[list[BeatProcess]]:
    """Two beat processes at once, over the same Redis and MongoDB (and the shared worker)."""
    started = [BeatProcess(settings, f"beat-{i}-{time.monotonic_ns()}") for i in (1, 2)]
    try:
        yield [beat.wait_ready() for beat in started]
    finally:
        for beat in started:
            beat.stop()


def runs_of(orch: Orchestrator, name: str) -> list[dict[str, Any]]:
    return sorted(orch.store.runs.find({"workflow": name}), key=lambda d: d["trigger"]["scheduled_for"])


def slot_of(run: dict[str, Any]) -> datetime:
    return at(run["trigger"]["scheduled_for"])


def test_two_beats_fire_each_slot_once(orch: Orchestrator, beats: list[BeatProcess]) -> None:
    install(orch, "Every Second", "* * * * * *", {"v": "scheduled"})
    wait_for(lambda: len(runs_of(orch, "Every Second")) >= 4, 20, "4 scheduled runs")
    runs = runs_of(orch, "Every Second")
    for run in runs:
        assert run["_id"] == run_id_for("Every Second", slot_of(run))
        assert run["variables"] == {"v": "scheduled"} and run["trigger"]["type"] == "schedule"
    assert len({slot_of(run) for run in runs}) == len(runs)
    # Each slot was started by exactly one beat; the other one found its run.
    ids = [run["_id"] for run in runs]

    def raced() -> list[str]:
        logs = "\n".join(beat.text() for beat in beats)
        return [run_id for run_id in ids if f"already fired (run {run_id})" in logs]

    def logged() -> bool:  # a beat logs "fired" after the send: it may come after the other's line
        logs = "\n".join(beat.text() for beat in beats)
        return all(f"fired as run {run_id}" in logs for run_id in ids)

    wait_for(lambda: len(raced()) >= 3 and logged(), 10, "both beats to try the same slots")
    logs = "\n".join(beat.text() for beat in beats)
    assert all(logs.count(f"fired as run {run_id}") == 1 for run_id in ids), logs[-3000:]
    for run_id in ids:
        assert orch.wait(run_id, timeout=20).status == "finished"


def test_a_changed_schedule_takes_effect_without_restarting_beat(
    orch: Orchestrator, beats: list[BeatProcess]
) -> None:
    install(orch, "Changing", "* * * * * *", {"v": "before"})
    wait_for(lambda: runs_of(orch, "Changing"), 20, "a run with the first schedule")
    install(orch, "Changing", "* * * * * */2", {"v": "after"})
    changed = datetime.now(UTC)

    def later_runs() -> list[dict[str, Any]]:
        return [run for run in runs_of(orch, "Changing") if slot_of(run) > changed]

    wait_for(lambda: len(later_runs()) >= 2, 20, "2 runs with the new schedule")
    for run in later_runs():
        assert run["variables"] == {"v": "after"} and run["trigger"]["cron"] == "* * * * * */2"
        assert slot_of(run).second % 2 == 0


def test_a_removed_workflow_stops_firing(orch: Orchestrator, beats: list[BeatProcess]) -> None:
    install(orch, "Going", "* * * * * *")
    wait_for(lambda: runs_of(orch, "Going"), 20, "a first run")
    orch.store.delete_workflow("Going")
    removed = datetime.now(UTC)
    gone = ("'Going' is no longer scheduled", "'Going' was removed or re-timed")
    wait_for(
        lambda: all(any(line in beat.text() for line in gone) for beat in beats), 10, "beats to drop 'Going'"
    )
    assert all(slot_of(run) <= removed for run in runs_of(orch, "Going"))


def test_a_new_workflow_fires_its_latest_slot_since_it_was_applied(
    orch: Orchestrator, beats: list[BeatProcess]
) -> None:
    # Applied two hours ago, hourly: as for a beat starting after a downtime, only the latest
    # missed slot fires.
    before = datetime.now(UTC)
    install(orch, "Hourly", "0 * * * *", updated_at=before - timedelta(hours=2))
    [run] = wait_for(lambda: runs_of(orch, "Hourly"), 10, "the latest missed slot to fire")
    assert slot_of(run) in {t.replace(minute=0, second=0, microsecond=0) for t in (before, datetime.now(UTC))}
    wait_for(lambda: all(run["_id"] in beat.text() for beat in beats), 10, "both beats to try the slot")
    assert [r["_id"] for r in runs_of(orch, "Hourly")] == [run["_id"]]
