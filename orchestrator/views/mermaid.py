"""Workflows and runs as Mermaid flowcharts (`flowchart TD`), for `--mermaid` and for GitHub.

One Mermaid node per workflow node, shaped by kind: a node others follow by branch (`condition`)
is a rhombus, `run_workflow` a subroutine, `parameter_loop` a stadium, any other a rectangle.
One edge per dependency, labelled with the branch it follows. A run's chart adds each node's
status as a class (coloured by `classDef` lines) and its duration.

Names come from users and may hold anything: every Mermaid id is made here (`n_<node id>`),
and every label is a quoted string in which each character outside a small safe set is written
as a numeric entity (`#34;` for `"`), so that no text can end its label, start an edge or
bring markup. Only plain flowchart syntax is used (no frontmatter, no directives, no markdown
strings), which GitHub's Mermaid renders.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping

from pydantic import JsonValue

from orchestrator.constants import NodeStatus
from orchestrator.definitions.spec import DEFAULT_BRANCHES, NODE_ID, NodeSpec, WorkflowSpec
from orchestrator.definitions.templating import contains_template
from orchestrator.store.models import NodeState, Run
from orchestrator.views.display import seconds

LABEL_MAX = 60
"""The most characters of user text in one line of a label (a longer text is cut with `…`)."""

STATUS_CLASSES: dict[NodeStatus, str] = {
    "finished": "fill:#d3f9d8,stroke:#2b8a3e,color:#1b4332",
    "failed": "fill:#ffe3e3,stroke:#c92a2a,color:#7d1a1a",
    "running": "fill:#d0ebff,stroke:#1c7ed6,color:#0b3d6b",
    "waiting": "fill:#fff3bf,stroke:#f08c00,color:#5c3c00",
    "skipped": "fill:#e9ecef,stroke:#adb5bd,color:#495057",
    "cancelled": "fill:#868e96,stroke:#495057,color:#ffffff",
    "pending": "fill:#ffffff,stroke:#adb5bd,color:#212529",
}
"""The `classDef` of each node status: finished green, failed red, running blue, waiting amber,
skipped grey, cancelled dark grey, pending white."""

_SAFE_PUNCTUATION = frozenset(" _-.,/()+*=!?@$%~'")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_]")
_BR = "<br>"  # our own line break; a `<` from user text is always an entity


def escape_label(text: str, limit: int = LABEL_MAX) -> str:
    """`text` as the inside of a quoted Mermaid label: cut at `limit` characters, each line break
    or control character made a space, every character but letters, digits, spaces and
    `_-.,/()+*=!?@$%~'` written as a numeric entity (`"` as `#34;`, `<` as `#60;`)."""
    flat = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)
    flat = " ".join(flat.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return "".join(c if c.isalnum() or c in _SAFE_PUNCTUATION else f"#{ord(c)};" for c in flat)


def mermaid_id(node_id: str) -> str:
    """A Mermaid id for a node id: `n_<id>` for a valid id; for any other text (a run whose
    workflow is gone may hold anything) its safe characters and a hash, so ids stay distinct."""
    if NODE_ID.fullmatch(node_id):
        return f"n_{node_id}"
    digest = hashlib.sha256(node_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"n_{_UNSAFE_ID.sub('_', node_id)[:40]}_{digest}"


def _literal_text(value: JsonValue) -> str | None:
    """The value when it is text without templates (a name known before the run), else None."""
    return value if isinstance(value, str) and value and not contains_template(value) else None


def _kind_line(node: NodeSpec) -> str:
    """What the node does, escaped: its type, with the workflow it runs or its loop body."""
    line = escape_label(node.type)
    if node.type == "run_workflow":
        target = _literal_text(node.params.get("workflow"))
        return f"{line} → {escape_label(target)}" if target else line
    body = node.params.get("body")
    if node.type == "parameter_loop" and isinstance(body, Mapping):
        body_type = _literal_text(body.get("type"))
        if body_type:
            inner = NodeSpec(id=node.id, type=body_type, params=_params_of(body))
            return f"{line} ↻ {_kind_line(inner)}"
    return line


def _params_of(body: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    params = body.get("params")
    return dict(params) if isinstance(params, Mapping) else {}


def _branching(spec: WorkflowSpec) -> set[str]:
    """Ids of the nodes that branch: of a type with built-in branches, or followed by a branch."""
    followed = {dep for node in spec.nodes for dep, branch in node.dependencies() if branch}
    return followed | {node.id for node in spec.nodes if DEFAULT_BRANCHES.get(node.type)}


def _shape(node: NodeSpec, label: str, branching: set[str]) -> str:
    """The node's definition: `n_id` and its label in the shape of its kind."""
    if node.id in branching:
        opening, closing = "{", "}"
    elif node.type == "run_workflow":
        opening, closing = "[[", "]]"
    elif node.type == "parameter_loop":
        opening, closing = "([", "])"
    else:
        opening, closing = "[", "]"
    return f'{mermaid_id(node.id)}{opening}"{label}"{closing}'


def _label(node: NodeSpec, state: NodeState | None = None) -> str:
    lines = [escape_label(node.id), _kind_line(node)]
    if node.description:
        lines.append(escape_label(node.description))
    if state is not None:
        lines.append(_state_line(state))
    return _BR.join(lines)


def _state_line(state: NodeState) -> str:
    duration = state.duration_s
    status = escape_label(state.status)
    return status if duration is None else f"{status} · {escape_label(seconds(duration))}"


def _edges(spec: WorkflowSpec) -> list[str]:
    """One edge per distinct `after` entry that names a node of the workflow."""
    ids = {node.id for node in spec.nodes}
    edges: list[str] = []
    for node in spec.nodes:
        for dep, branch in dict.fromkeys(node.dependencies()):
            if dep not in ids:
                continue
            arrow = f'-->|"{escape_label(branch)}"|' if branch else "-->"
            edges.append(f"    {mermaid_id(dep)} {arrow} {mermaid_id(node.id)}")
    return edges


def workflow_mermaid(spec: WorkflowSpec) -> str:
    """The workflow as a Mermaid `flowchart TD`: a node per workflow node (id, type, what it
    runs), an edge per dependency labelled with its branch. Ends with a newline."""
    branching = _branching(spec)
    lines = ["flowchart TD"]
    lines += [f"    {_shape(node, _label(node), branching)}" for node in spec.nodes]
    lines += _edges(spec)
    return "\n".join(lines) + "\n"


def run_mermaid(spec: WorkflowSpec | None, run: Run) -> str:
    """The run as a Mermaid `flowchart TD`: the workflow's chart with each node's status (a
    class, coloured) and duration. Nodes of the run that the spec lacks are added without edges;
    with no spec (the workflow was deleted), the run's nodes alone, without edges."""
    nodes = list(spec.nodes) if spec is not None else []
    known = {node.id for node in nodes}
    nodes += [NodeSpec(id=node_id, type="?") for node_id in run.nodes if node_id not in known]
    branching = _branching(spec) if spec is not None else set()
    lines = ["flowchart TD"]
    for node in nodes:
        state = run.nodes.get(node.id)
        label = _label(node, state) if node.id in known else _unknown_label(node.id, state)
        lines.append(f"    {_shape(node, label, branching)}")
    lines += _edges(spec) if spec is not None else []
    lines += [f"    classDef {status} {style}" for status, style in STATUS_CLASSES.items()]
    lines += [
        f"    class {mermaid_id(node_id)} {state.status}"
        for node_id, state in run.nodes.items()
        if state.status in STATUS_CLASSES
    ]
    return "\n".join(lines) + "\n"


def _unknown_label(node_id: str, state: NodeState | None) -> str:
    """The label of a run's node that the workflow (as it is now) does not have."""
    lines = [escape_label(node_id)]
    return _BR.join([*lines, _state_line(state)] if state is not None else lines)
