"""The retention task: `orchestrator beat` removes runs older than `ORCH_RETENTION_DAYS`.

Every `PRUNE_EVERY_S`, a worker removes the trees of top-level runs that are over and older
than the setting (`orchestrator.store.retention`), at most `PRUNE_LIMIT` trees a time, the
oldest first, so that a first run on a long history spreads over several hours instead of
holding a worker. Without the setting there is no schedule, and runs stay until
`orchestrator runs prune` removes them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from orchestrator.constants import PRUNE_TASK
from orchestrator.engine.app import OrchestratorApp
from orchestrator.store.models import utcnow
from orchestrator.store.retention import prune

logger = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0
PRUNE_LIMIT = 5000


def register_prune_task(app: OrchestratorApp) -> None:
    """Register the task, and schedule it on beat when `ORCH_RETENTION_DAYS` is set."""

    @app.task(name=PRUNE_TASK, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def prune_runs(days: float | None = None, limit: int = PRUNE_LIMIT) -> dict[str, Any]:
        """Remove the runs over and older than `days` (beat's `ORCH_RETENTION_DAYS`, sent with
        the message so that the worker need not have it; else the worker's own; nothing when
        neither is set); the counts."""
        days = days if days is not None else app.settings.retention_days
        if days is None or days <= 0:
            return {}
        removed = prune(app.store, utcnow() - timedelta(days=days), limit=limit)
        if removed.trees or removed.kept_active:
            logger.info(
                "retention (%g days): removed %d run trees (%d runs, %d node logs); "
                "kept %d with a run still active",
                days,
                removed.trees,
                removed.runs,
                removed.node_logs,
                removed.kept_active,
            )
        return removed.to_json()

    if app.settings.retention_days is not None:
        app.conf.beat_schedule = {
            **app.conf.beat_schedule,
            "orchestrator-prune-runs": {
                "task": PRUNE_TASK,
                "schedule": PRUNE_EVERY_S,
                "kwargs": {"days": app.settings.retention_days},
                "options": {"expires": PRUNE_EVERY_S * 0.9},
            },
        }
