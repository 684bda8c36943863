"""The run-history web UI (`orchestrator ui`): runs, their graphs, logs and lineage, workflows.

Server-rendered pages and a small JSON API on Starlette, served by uvicorn; plain CSS and a
small script, no build step. See docs/ui.md.

Modules: `app` (the application), `server` (serving it), `auth` (who may use it, CSRF and
security headers), `pages` and `json_api` (the endpoints), `graph` (workflow graphs as
SVG), `catalog` (what the workflows pages say), `lineage` (a run's relatives), `queries`
(the runs list's parameters), `rendering` (templates and their filters), `state`.
"""

from __future__ import annotations

from orchestrator.ui.app import build_app
from orchestrator.ui.server import ServerThread, serve

__all__ = ["ServerThread", "build_app", "serve"]
