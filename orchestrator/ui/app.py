"""The UI's Starlette application: routes, error pages, the guard, static files.

`build_app(settings)` makes it; `orchestrator.ui.server` serves it with uvicorn. The app
reads MongoDB through an `Orchestrator` (given, or made here and closed with the app), and
uses Redis only to cancel and re-run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pymongo.errors import PyMongoError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.api import Orchestrator
from orchestrator.errors import (
    OrchestratorError,
    RunNotFound,
    RunStillActive,
    ServiceUnavailable,
    StoreError,
    WorkflowNotFound,
)
from orchestrator.settings import Settings
from orchestrator.ui import json_api, pages
from orchestrator.ui.auth import Guard, credentials_of
from orchestrator.ui.rendering import make_templates
from orchestrator.ui.state import UiState, ui_state

STATIC = Path(__file__).parent / "static"


def routes() -> list[Route | Mount]:
    """Every route; the specific `/api/runs/<id>/…` ones before `/api/runs/<id>`, since run
    ids may hold `/` (ids are given by users: `trigger(..., run_id=...)`)."""
    return [
        Route("/", pages.runs_page),
        Route("/runs/{run_id:path}", pages.run_page),
        Route("/workflows", pages.workflows_page),
        Route("/workflows/{name:path}", pages.workflow_page),
        Route("/api/runs", json_api.list_runs),
        Route("/api/counts", json_api.counts),
        Route("/api/workflows", json_api.list_workflows),
        Route("/api/workflows/{name:path}", json_api.get_workflow),
        Route("/api/runs/{run_id:path}/logs", json_api.run_logs),
        Route("/api/runs/{run_id:path}/cancel", json_api.cancel, methods=["POST"]),
        Route("/api/runs/{run_id:path}/rerun", json_api.rerun, methods=["POST"]),
        Route("/api/runs/{run_id:path}/delete", json_api.delete, methods=["POST"]),
        Route("/api/runs/{run_id:path}", json_api.get_run),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def status_of(exc: Exception) -> int:
    """The HTTP status of an error: 404 for a missing run or workflow, 409 for a run still
    active (to delete), 503 when a service does not answer, 400 for any other refusal."""
    if isinstance(exc, RunNotFound | WorkflowNotFound):
        return 404
    if isinstance(exc, RunStillActive):
        return 409
    if isinstance(exc, ServiceUnavailable | StoreError | PyMongoError):
        return 503
    return 400


def error_response(request: Request, status: int, message: str) -> Response:
    """`{"error": message}` under /api, else the error page."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    templates = ui_state(request).templates
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )


def _orchestrator_error(request: Request, exc: Exception) -> Response:
    message = str(exc)
    if isinstance(exc, PyMongoError):
        message = f"MongoDB did not answer ({str(exc).splitlines()[0][:200]}); is it running? (MONGO_URL)"
    return error_response(request, status_of(exc), message)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    response = error_response(request, exc.status_code, message)
    response.headers.update(exc.headers or {})
    return response


def build_app(settings: Settings, *, orchestrator: Orchestrator | None = None) -> Starlette:
    """The UI as an ASGI app.

    Args:
        settings: MongoDB, Redis and the UI's password or token (`ORCH_UI_PASSWORD`,
            `ORCH_UI_TOKEN`).
        orchestrator: the `Orchestrator` to read runs with (one is made, and closed when the
            app shuts down, when omitted).
    """
    owned = orchestrator is None
    orch = orchestrator or Orchestrator(settings=settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owned:
            orch.close()

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(Guard, credentials=credentials_of(settings))],
        exception_handlers={
            OrchestratorError: _orchestrator_error,
            PyMongoError: _orchestrator_error,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    app.state.ui = UiState(orch, make_templates())
    return app
