"""Schedules: celery beat fires each workflow's `schedule:` (cron in a timezone) as runs.

`orchestrator beat` runs celery beat with `WorkflowScheduler`, a small `celery.beat.Scheduler`
whose entries are not in a settings file but in the `workflows` collection: it re-reads them
every `ORCH_SCHEDULE_REFRESH_S` seconds, so applying, changing or removing a scheduled
workflow takes effect without restarting beat. At each slot it starts the run itself (through
`launch_run`, as the API does): beat reads MongoDB to know the schedules anyway, and the run
document then exists at the slot time even when every worker is busy.

Exactly once per slot, with any number of beat processes: a slot's run id is deterministic
(`run_id_for`, `<workflow>@<slot in UTC>`) and creating a run is idempotent by id, so a
second beat (or a restarted one) that fires the same slot finds the run and sends nothing.

Slots are computed by `croniter` in the schedule's own timezone. Across daylight-saving
changes: a local time that does not exist (the clock jumps forward over it) fires when the
clock jumps; a local time that happens twice (the clock goes back) fires once, the first
time. Slots missed while no beat was running are not replayed: on start, beat fires only the
latest missed slot of each workflow (if it came after the workflow was last applied).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from celery.beat import Scheduler
from croniter import croniter  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from orchestrator.definitions.spec import WorkflowSpec, check_cron, check_timezone
from orchestrator.engine.launcher import launch_run
from orchestrator.errors import ConfigurationError, OrchestratorError

if TYPE_CHECKING:
    from orchestrator.engine.app import OrchestratorApp

logger = logging.getLogger("orchestrator.engine.schedules")

#: The `--scheduler` argument of `celery beat` that `orchestrator beat` passes.
SCHEDULER = "orchestrator.engine.schedules:WorkflowScheduler"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Upper bound on the slots skipped in a row (second occurrences of repeated local times):
# far above the 3600 of a per-second schedule in a repeated hour.
_MAX_SKIPS = 10_000


class WorkflowSchedule(BaseModel):
    """One workflow's schedule as beat sees it: when it fires, with which variables.

    `cron` is what croniter accepts: the 5 fields of workflow files, or 6 with seconds last
    (workflow files are checked for 5 fields by `ScheduleSpec`; beat does not refuse more).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    workflow: str
    cron: str
    timezone: str = "UTC"
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    updated_at: datetime | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return check_cron(value, fields=(5, 6))

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("updated_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def timing(self) -> tuple[str, str]:
        """What decides the slots: a change of it restarts the count from the change."""
        return (self.cron, self.timezone)

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after `after` (aware), in UTC."""
        slots = croniter(self.cron, after.astimezone(self.zone))
        for _ in range(_MAX_SKIPS):
            slot: datetime = slots.get_next(datetime)
            if not self._repeated(slot):
                return slot.astimezone(UTC)
        raise OrchestratorError(f"workflow '{self.workflow}': cron {self.cron!r} yields no slot")

    def upcoming(self, count: int, after: datetime) -> list[datetime]:
        """The next `count` slots after `after`, in the schedule's time zone (for people)."""
        slots: list[datetime] = []
        for _ in range(count):
            after = self.next_slot(after)
            slots.append(after.astimezone(self.zone))
        return slots

    def latest_slot(self, now: datetime) -> datetime:
        """The last slot at or before `now` (aware), in UTC."""
        slots = croniter(self.cron, now.astimezone(self.zone))
        for _ in range(_MAX_SKIPS):
            slot: datetime = slots.get_prev(datetime)
            if not self._repeated(slot):
                break
        else:
            raise OrchestratorError(f"workflow '{self.workflow}': cron {self.cron!r} yields no slot")
        following = self.next_slot(slot)  # croniter's previous slot is strictly before `now`
        return following if following <= now else slot.astimezone(UTC)

    def _repeated(self, slot: datetime) -> bool:
        """True for the second occurrence of a local time that the clock going back repeats."""
        return slot.astimezone(UTC).astimezone(self.zone).fold == 1


def run_id_for(workflow: str, slot: datetime) -> str:
    """The run id of a workflow's slot: `<name>@<UTC time>`, the same in every beat process.

    Characters other than letters, digits, `_`, `.` and `-` become `-`; a name that had to
    change gets a short hash of the real name, so that two names cannot share ids.
    """
    name = _UNSAFE.sub("-", workflow).strip("-")[:80] or "workflow"
    if name != workflow:
        name += "-" + hashlib.sha256(workflow.encode()).hexdigest()[:8]
    return f"{name}@{slot.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def schedule_of(doc: Mapping[str, Any]) -> WorkflowSchedule | None:
    """The schedule of a `workflows` document, or None when it has none.

    Raises:
        ValidationError: the schedule is malformed (a cron or timezone beat cannot use).
    """
    schedule = (doc.get("spec") or {}).get("schedule")
    if not schedule:
        return None
    return WorkflowSchedule.model_validate(
        {**schedule, "workflow": doc["_id"], "updated_at": doc.get("updated_at")}
    )


def spec_of(doc: Mapping[str, Any]) -> WorkflowSpec:
    """The workflow of a `workflows` document (its schedule is read by `schedule_of`)."""
    return WorkflowSpec.model_validate({**doc["spec"], "schedule": None})


@dataclass
class _Tracked:
    schedule: WorkflowSchedule
    cursor: datetime  # every slot up to here is fired (or was before the workflow was applied)
    next_due: datetime


class SlotPlanner:
    """Which slots are due, for a set of schedules: the clock-free part of the scheduler.

    A schedule first seen (beat starting, a new workflow) counts from when its workflow was
    applied, so after a downtime its latest missed slot is due at once; a changed cron or
    timezone counts from the change; other changes (variables, nodes) keep the count.
    """

    def __init__(self) -> None:
        self.tracked: dict[str, _Tracked] = {}

    def update(self, schedules: Iterable[WorkflowSchedule], now: datetime) -> None:
        """Take the current schedules: add new ones, follow changed ones, drop the others."""
        current = {s.workflow: s for s in schedules}
        for name in set(self.tracked) - set(current):
            logger.info("workflow '%s' is no longer scheduled", name)
            del self.tracked[name]
        for name, schedule in current.items():
            tracked = self.tracked.get(name)
            if tracked is not None and tracked.schedule.timing == schedule.timing:
                tracked.schedule = schedule
                continue
            cursor = schedule.updated_at or now
            if tracked is not None:
                cursor = max(cursor, tracked.cursor)
            self.tracked[name] = _Tracked(schedule, cursor, schedule.next_slot(cursor))
            logger.info(
                "workflow '%s' scheduled: cron %r in %s, next slot %s",
                name,
                schedule.cron,
                schedule.timezone,
                self.tracked[name].next_due.isoformat(),
            )

    def due(self, now: datetime) -> list[tuple[WorkflowSchedule, datetime]]:
        """Each schedule with a slot due by `now`, with its latest due slot; marks them fired."""
        fired = []
        for tracked in self.tracked.values():
            if tracked.next_due > now:
                continue
            slot = tracked.schedule.latest_slot(now)  # missed slots collapse into the latest
            fired.append((tracked.schedule, slot))
            tracked.cursor = slot
            tracked.next_due = tracked.schedule.next_slot(slot)
        return fired

    def next_due(self) -> datetime | None:
        """When the next slot of any schedule is due."""
        return min((t.next_due for t in self.tracked.values()), default=None)

    def forget(self, workflow: str) -> None:
        """Stop tracking a workflow (found removed when it was due)."""
        self.tracked.pop(workflow, None)


class WorkflowScheduler(Scheduler):  # type: ignore[misc]
    """A celery beat scheduler over the `workflows` collection (see the module docstring).

    Entries of `beat_schedule` in the Celery config, if any, still run as in plain beat.
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.planner = SlotPlanner()
        self._refresh_at = 0.0  # monotonic time of the next read of `workflows`
        self._invalid: dict[str, str] = {}  # workflow -> problem already logged
        super().__init__(app, *args, **kwargs)

    @property
    def refresh_s(self) -> float:
        """Seconds between two reads of the `workflows` collection (`ORCH_SCHEDULE_REFRESH_S`)."""
        return float(self.app.settings.schedule_refresh_s)

    @property
    def info(self) -> str:
        """The line `celery beat` prints about its scheduler at start."""
        return f"    . schedules -> registered workflows, re-read every {self.refresh_s:g} s"

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass: re-read the schedules when it is time, fire due slots, say how long to sleep."""
        if time.monotonic() >= self._refresh_at:
            self.refresh()
        for schedule, slot in self.planner.due(datetime.now(UTC)):
            self.fire(schedule, slot)
        others = float(super().tick(*args, **kwargs))  # `beat_schedule` entries
        wait = self._refresh_at - time.monotonic()
        next_due = self.planner.next_due()
        if next_due is not None:
            wait = min(wait, (next_due - datetime.now(UTC)).total_seconds() + 0.002)
        return max(min(wait, others, float(self.max_interval)), 0.0)

    def refresh(self) -> None:
        """Read every workflow's schedule; a MongoDB error keeps the schedules read last time."""
        self._refresh_at = time.monotonic() + self.refresh_s
        try:
            docs = list(self.app.store.workflows.find())
        except Exception as exc:  # MongoDB away: beat goes on with what it knows
            logger.error("cannot read the workflows collection (keeping the last schedules): %s", exc)
            return
        schedules = []
        for doc in docs:
            try:
                schedule = schedule_of(doc)
            except ValidationError as exc:
                self._report_invalid(str(doc["_id"]), exc)
                continue
            if schedule is not None:
                self._invalid.pop(schedule.workflow, None)
                schedules.append(schedule)
        self.planner.update(schedules, datetime.now(UTC))

    def fire(self, schedule: WorkflowSchedule, slot: datetime) -> str | None:
        """Start the run of a slot, unless it exists already; the run id, or None when not fired.

        The workflow is read again first, so that one removed or re-timed since the last
        refresh does not fire, and the run uses its latest nodes and variables.
        """
        name = schedule.workflow
        try:
            doc = self.app.store.workflows.find_one({"_id": name})
            current = schedule_of(doc) if doc is not None else None
            if doc is None or current is None or current.timing != schedule.timing:
                logger.info("workflow '%s' was removed or re-timed: slot %s not fired", name, slot)
                self.planner.forget(name)
                self._refresh_at = 0.0
                return None
            run_id, created = launch_run(
                self._orchestrator_app(),
                spec_of(doc),
                dict(current.variables),
                trigger=trigger_for(current, slot),
                run_id=run_id_for(name, slot),
            )
        except Exception as exc:  # MongoDB or Redis away, a bad definition: the next slot may do
            logger.error("workflow '%s': slot %s could not fire: %s", name, slot.isoformat(), exc)
            return None
        if created:
            logger.info("workflow '%s': slot %s fired as run %s", name, slot.isoformat(), run_id)
        else:
            logger.info("workflow '%s': slot %s already fired (run %s)", name, slot.isoformat(), run_id)
        return run_id

    def _orchestrator_app(self) -> OrchestratorApp:
        from orchestrator.engine.app import OrchestratorApp

        if not isinstance(self.app, OrchestratorApp):
            raise ConfigurationError(
                "WorkflowScheduler needs the orchestrator's app: run `orchestrator beat`"
            )
        return self.app

    def _report_invalid(self, workflow: str, exc: ValidationError) -> None:
        problem = "; ".join(e["msg"] for e in exc.errors())
        if self._invalid.get(workflow) != problem:
            logger.error("workflow '%s' has a schedule beat cannot use (not fired): %s", workflow, problem)
            self._invalid[workflow] = problem


def trigger_for(schedule: WorkflowSchedule, slot: datetime) -> dict[str, Any]:
    """The `trigger` of a scheduled run: the slot (UTC, ISO 8601) and the schedule that made it."""
    return {
        "type": "schedule",
        "scheduled_for": slot.astimezone(UTC).isoformat(),
        "cron": schedule.cron,
        "timezone": schedule.timezone,
    }
