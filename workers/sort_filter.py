"""`sort_filter`: keeps the items of a list that pass `where`, sorts them by a key, cuts to `limit`.

`where` is a Jinja2 expression evaluated once per item, with `item` and `index` (its position
in `items`) in scope besides the variables, `nodes` and `run`; an item passes when the value
is truthy. Write it as one template, `"{{ item.score > min_score }}"`, or as the bare
expression, `"item.score > min_score"`: the engine passes `where` unrendered (`raw_params`)
and the node renders it per item, in the same sandbox as every template. A string that mixes
text and templates (`"item.score > {{ x }}"`) is refused, since it would not be one expression.

`sort_by` is a dotted path into each item (`output.sharpe`; a number indexes a list:
`prices.0`). Items without that key (or where it is null) are kept and placed last, in their
original order, whether `descending` or not. Sorting is stable. Values of types that cannot
be compared (a number and a string) fail the node, naming both items.

Output: the resulting list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from orchestrator.definitions.templating import build_scope, render
from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError, TemplateError

_WRAPPED = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_MISSING = object()


class SortFilterParams(BaseModel):
    """The list, and what to keep (`where`), how to order (`sort_by`, `descending`), how many (`limit`)."""

    model_config = ConfigDict(extra="forbid")

    items: list[JsonValue]
    where: str | None = Field(default=None, min_length=1)
    sort_by: str | None = Field(default=None, min_length=1)
    descending: bool = False
    limit: int | None = Field(default=None, ge=0)

    @field_validator("where")
    @classmethod
    def _one_expression(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _WRAPPED.match(value)
        expr = match["expr"] if match else value
        if "{{" in expr or "}}" in expr or "{%" in expr or "%}" in expr:
            raise ValueError(
                'must be one expression, either "{{ item.score > 0 }}" or "item.score > 0", '
                "not text mixed with templates"
            )
        return expr.strip()


def lookup(item: Any, path: str) -> Any:
    """The value at a dotted path (`output.sharpe`, `prices.0`), or `_MISSING`."""
    value = item
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def keep(items: list[Any], where: str, scope: Mapping[str, Any], label: str) -> list[Any]:
    """The items for which the sandboxed expression `where` is truthy."""
    template = "{{ " + where + " }}"
    kept = []
    for index, item in enumerate(items):
        try:
            passed = render(template, {**scope, "item": item, "index": index}, f"{label}, item [{index}]")
        except TemplateError as exc:
            raise NodeError(str(exc).replace(repr(template), repr(where))) from exc
        if passed:
            kept.append(item)
    return kept


def sort_items(items: list[Any], path: str, descending: bool, label: str) -> list[Any]:
    """Items sorted by the value at `path` (stable); those without it come last, in order."""
    keyed = [(lookup(item, path), i, item) for i, item in enumerate(items)]
    present = [entry for entry in keyed if entry[0] is not _MISSING and entry[0] is not None]
    missing = [item for value, _, item in keyed if value is _MISSING or value is None]
    try:
        present.sort(key=lambda entry: entry[0], reverse=descending)
    except TypeError as exc:
        kinds: dict[str, int] = {}
        for value, i, _ in present:
            kinds.setdefault(type(value).__name__, i)
        found = ", ".join(f"{kind} at item [{i}]" for kind, i in kinds.items())
        raise NodeError(f"{label}: values at '{path}' cannot be compared with each other ({found})") from exc
    return [item for _, _, item in present] + missing


def run(params: SortFilterParams, context: NodeContext) -> list[Any]:
    """Filter by `where`, sort by `sort_by`, cut to `limit`; return the list."""
    items = list(params.items)
    if params.where is not None:
        scope = build_scope(context.variables, context.outputs, context.run_id, context.workflow)
        items = keep(items, params.where, scope, f"node '{context.node_id}' (sort_filter), parameter 'where'")
    if params.sort_by is not None:
        label = f"node '{context.node_id}' (sort_filter), parameter 'sort_by'"
        items = sort_items(items, params.sort_by, params.descending, label)
    if params.limit is not None:
        items = items[: params.limit]
    return items


node_type = NodeType(
    name="sort_filter",
    params=SortFilterParams,
    run=run,
    description="filters a list with an expression, sorts it by a key and keeps the first `limit`",
    raw_params=frozenset({"where"}),
    pure=True,
)
