"""`user_list`: named lists that outlive runs (watch lists, collected alerts), kept in MongoDB.

Actions: `append` one `item`, `extend` with `items`, `read`, `clear`. Lists are created by
their first write; reading a list never written gives no items. Storage and concurrency are
in `orchestrator.store.user_lists` (one document per item, so parallel appends lose nothing); the
same lists are shown by `orchestrator lists [NAME]`.

Output: for `read` `{list, items, count}`; for writes `{list, count}` (the count after the
write; `clear` adds `removed`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.store.user_lists import UserLists

Action = Literal["append", "extend", "read", "clear"]


class UserListParams(BaseModel):
    """Which list (`list`), what to do, and the item (`append`) or items (`extend`) to add."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(alias="list", min_length=1, max_length=200)
    action: Action
    item: JsonValue = None
    items: list[JsonValue] | None = None

    @model_validator(mode="after")
    def _values_match_action(self) -> UserListParams:
        given = {name for name in ("item", "items") if name in self.model_fields_set}
        needed = {"append": {"item"}, "extend": {"items"}}.get(self.action, set())
        if needed - given:
            raise ValueError(f"action '{self.action}' needs '{next(iter(needed))}'")
        if given - needed:
            extra = next(iter(given - needed))
            raise ValueError(f"'{extra}' is not used by action '{self.action}'")
        return self


def run(params: UserListParams, context: NodeContext) -> dict[str, Any]:
    """Do the action on the named list; return the list's name and count (and items for `read`)."""
    lists = UserLists(context.store.db)
    name = params.name
    if params.action == "read":
        items = lists.read(name)
        return {"list": name, "items": items, "count": len(items)}
    key = f"{context.run_id}/{context.node_id}"  # once per node of a run, however often delivered
    if params.action == "append":
        return {"list": name, "count": lists.append(name, params.item, key)}
    if params.action == "extend":
        return {"list": name, "count": lists.extend(name, list(params.items or []), key)}
    removed = lists.clear(name)
    return {"list": name, "count": lists.count(name), "removed": removed}


node_type = NodeType(
    name="user_list",
    params=UserListParams,
    run=run,
    description="appends to, extends, reads or clears a named list kept in MongoDB",
)
