"""The runs list's query parameters, read the same way by the page and the JSON API.

`workflow`, `status`, `trigger`, `parent`, `q` (text in the run id), `since` and `until`
(ISO dates or times; without a zone they are UTC) make a `RunFilter`; `limit` and `cursor`
choose the page. Anything malformed is a `BadFilter` (a 400 with the reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from orchestrator.store.history import BadFilter, RunFilter

FILTERS = ("workflow", "status", "trigger", "parent", "q", "since", "until")
"""The filter parameters, in the order links carry them."""
DEFAULT_PAGE = 50
MAX_PAGE = 500
"""The most runs one page of the UI or its API holds."""


def parse_time(value: str, name: str) -> datetime | None:
    """An ISO date or date-time (`2024-05-01`, `2024-05-01T08:00`, with or without a zone;
    none means UTC), or None when empty."""
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise BadFilter(
            f"'{name}' must be a date or time such as 2024-05-01 or 2024-05-01T08:00, not '{value[:40]}'"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filter_values(params: Mapping[str, str]) -> dict[str, str]:
    """The filter parameters given (non-empty, trimmed), to carry into links."""
    return {name: params[name].strip() for name in FILTERS if params.get(name, "").strip()}


def run_filter(params: Mapping[str, str]) -> RunFilter:
    """The `RunFilter` of a request's query parameters."""
    given = filter_values(params)
    return RunFilter(
        workflow=given.get("workflow"),
        status=given.get("status"),
        trigger=given.get("trigger"),
        parent=given.get("parent"),
        text=given.get("q"),
        since=parse_time(given.get("since", ""), "since"),
        until=parse_time(given.get("until", ""), "until"),
    )


def page_limit(params: Mapping[str, str], default: int = DEFAULT_PAGE) -> int:
    """The `limit` parameter: 1 to `MAX_PAGE` runs (`default` when absent)."""
    raw = params.get("limit", "").strip()
    if not raw:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise BadFilter(f"'limit' must be a whole number from 1 to {MAX_PAGE}, not '{raw[:20]}'") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadFilter(f"'limit' must be from 1 to {MAX_PAGE}, not {limit}")
    return limit


def page_cursor(params: Mapping[str, str]) -> str | None:
    """The `cursor` parameter (a `next_cursor` given by the page before), or None."""
    return params.get("cursor", "").strip() or None
