"""Which nodes' outputs a node's templates read: so that, in a wide workflow, a node reads
only those from its run document, not every node's state.

A template reads `nodes.<id>` (or `nodes['<id>']`); any other use of `nodes` (a variable
index, a loop over it, passing it whole) reads an unknown set, and the answer is then None:
the node reads every node. Templates are parsed, never rendered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes

from orchestrator.definitions.templating import has_template

_PARSER = Environment()  # parsing only: nothing is compiled or rendered here


def nodes_read(text: str) -> set[str] | None:
    """The node ids a template reads through `nodes`, or None when it cannot be told."""
    try:
        tree = _PARSER.parse(text)
    except (TemplateSyntaxError, RecursionError):
        return None
    found: set[str] = set()
    covered: set[int] = set()
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(access, "node", None)
        if not (isinstance(target, nodes.Name) and target.name == "nodes"):
            continue
        key = getattr(access, "attr", None)
        if key is None:
            arg = getattr(access, "arg", None)
            key = arg.value if isinstance(arg, nodes.Const) else None
        if not isinstance(key, str):
            return None  # nodes[some_variable]
        found.add(key)
        covered.add(id(target))
    uses = [name for name in tree.find_all(nodes.Name) if name.name == "nodes"]
    return found if all(id(name) in covered for name in uses) else None


def nodes_referenced(params: Mapping[str, Any], raw: frozenset[str] = frozenset()) -> set[str] | None:
    """The node ids a node's params read (templates, and the expressions of params a type
    takes as written, such as `sort_filter`'s `where`); None when that cannot be told."""
    found: set[str] = set()
    for key, value in params.items():
        for text in _strings(value):
            if has_template(text):
                read = nodes_read(text)
            elif key in raw and "nodes" in text:
                read = nodes_read("{{ " + text + " }}")
            else:
                continue
            if read is None:
                return None
            found |= read
    return found


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
