"""The run tree says where a run waits: for its send, or for a worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from orchestrator.store.models import Run
from orchestrator.views.display import run_tree

CREATED = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def rendered(**fields: Any) -> str:
    doc = {"_id": "r1", "workflow": "W", "status": "pending", "created_at": CREATED}
    run = Run.model_validate(doc | fields)
    console = Console(width=200, record=True, color_system=None)
    console.print(run_tree(run))
    return console.export_text()


def test_a_pending_run_says_whether_it_was_sent_to_a_worker() -> None:
    assert "not sent to a worker yet" in rendered()
    assert "queued for a worker" in rendered(dispatched_at=CREATED)


def test_a_run_that_waited_for_a_worker_says_how_long() -> None:
    started = {"status": "running", "dispatched_at": CREATED}
    assert "queued 4.00 s for a worker" in rendered(**started, started_at=CREATED + timedelta(seconds=4))
    assert "queued" not in rendered(**started, started_at=CREATED + timedelta(milliseconds=5))
