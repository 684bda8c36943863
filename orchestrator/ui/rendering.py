"""The Jinja2 environment of the UI's pages: autoescaped, with the filters the templates use.

Every value a page shows comes from users (workflow names, variables, outputs, errors) and is
escaped; a `{{` in such a value is text, never a template (the values are passed to templates,
not rendered as templates). Ids and names put in URLs are percent-encoded whole (`urlpart`),
so that a `/`, `?` or `#` in a run id or workflow name cannot change where a link goes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.templating import Jinja2Templates

from orchestrator.store.models import aware
from orchestrator.views.display import seconds

TEMPLATES = Path(__file__).parent / "templates"


def when(value: datetime | None) -> str:
    """A time for people, in UTC to the second (`2024-05-01 08:00:03`), or "-"."""
    if value is None:
        return "-"
    return aware(value).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str:
    """A time as ISO 8601 in UTC (for `<time datetime>` and scripts), or ""."""
    return aware(value).isoformat() if value is not None else ""


def pretty(value: Any) -> str:
    """JSON, indented, non-ASCII kept."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def urlpart(value: object) -> str:
    """A value as one URL path segment (every reserved character encoded)."""
    return quote(str(value), safe="")


def query(params: Mapping[str, object], **changes: object) -> str:
    """`params` with `changes` as a query string, empty values left out (`?a=1&b=2` or "")."""
    merged = {**params, **changes}
    pairs = [(k, str(v)) for k, v in merged.items() if v not in (None, "")]
    return "?" + urlencode(pairs) if pairs else ""


def make_templates() -> Jinja2Templates:
    """The UI's templates, autoescaped, undefined names an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, iso=iso, pretty=pretty, urlpart=urlpart, seconds=seconds)
    env.globals.update(query=query)
    return Jinja2Templates(env=env)
