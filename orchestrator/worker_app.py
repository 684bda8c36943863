"""The target of the `celery` command line: `celery -A orchestrator.worker_app <command>`.

For Flower (`celery -A orchestrator.worker_app flower`) and for `celery inspect` / `control` /
`purge` and the like. The `orchestrator worker` and `orchestrator beat` commands build their
own app and do not need this module.

Importing it builds the app from the environment (`REDIS_URL`, `MONGO_URL`, `ORCH_PLUGINS`, …;
see `orchestrator.settings`), so set the environment first. It registers every task and
connects to nothing: Redis and MongoDB are reached only when the app is used.
"""

from __future__ import annotations

from orchestrator.engine.app import OrchestratorApp
from orchestrator.engine.factory import create_app

__all__ = ["app"]

app: OrchestratorApp = create_app()
