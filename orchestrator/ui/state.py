"""What every page and API call of the UI shares: the `Orchestrator` and the templates."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from orchestrator.api import Orchestrator


@dataclass(frozen=True)
class UiState:
    """The UI's shared objects, kept in `app.state.ui` by `build_app`."""

    orch: Orchestrator
    templates: Jinja2Templates


def ui_state(request: Request) -> UiState:
    """The shared objects of the app serving `request`."""
    state = request.app.state.ui
    if not isinstance(state, UiState):  # only if the app was not made by `build_app`
        raise TypeError("the UI's state is missing: make the app with orchestrator.ui.build_app")
    return state
