"""`create_app`: the Celery app built explicitly from `Settings`, with every task registered.

It sits above the engine's modules (it registers their tasks), so that the app's own class
(`orchestrator.engine.app`) stays below them: the engine's modules name the app's type without an
import cycle.
"""

from __future__ import annotations

from orchestrator.engine.app import OrchestratorApp
from orchestrator.engine.pruning import register_prune_task
from orchestrator.engine.registry import load_registry
from orchestrator.engine.tasks import register_tasks
from orchestrator.settings import Settings


def create_app(settings: Settings | None = None) -> OrchestratorApp:
    """Build the Celery app: `celeryconfig` settings, Redis from `REDIS_URL`, every task.

    Args:
        settings: the settings to use; read from the environment when omitted.
    """
    settings = settings or Settings()
    registry = load_registry(tuple(settings.plugin_modules))
    app = OrchestratorApp(settings, registry)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = settings.redis_url
    app.conf.result_backend = settings.redis_url
    app.conf.broker_connection_timeout = settings.connect_timeout_s
    app.conf.redis_socket_connect_timeout = settings.connect_timeout_s
    sweep = dict(app.conf.beat_schedule["orchestrator-sweep-waits"])
    sweep["schedule"] = settings.sweep_s
    sweep["options"] = {"expires": settings.sweep_s * 0.9}
    app.conf.beat_schedule = {**app.conf.beat_schedule, "orchestrator-sweep-waits": sweep}
    register_tasks(app)
    register_prune_task(app)
    return app
