"""Workflow specs: pydantic models of workflow files, loading from YAML/JSON, and validation.

Validation happens at load time so that a bad file is refused with every problem listed, each
naming the workflow, the node and the field, before anything runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from orchestrator.errors import WorkflowValidationError

NODE_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class RetryPolicy(BaseModel):
    """How often a failing node is tried, and how long to wait between tries."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=100)
    backoff_s: float = Field(2.0, ge=0, le=600)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2, 3, …): `backoff_s` doubling each time."""
        return float(self.backoff_s * 2 ** max(attempt - 2, 0))


class ScheduleSpec(BaseModel):
    """When celery beat fires the workflow."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    timezone: str = "UTC"
    variables: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)


def check_cron(value: str, fields: tuple[int, ...] = (5,)) -> str:
    """`value` if it is a cron expression that fires; else a `ValueError` saying what is wrong.

    Args:
        fields: the field counts allowed: 5 in workflow files (minute hour day-of-month
            month day-of-week); beat also takes 6, seconds last.
    """
    from croniter import croniter  # type: ignore[import-untyped]

    if len(value.split()) not in fields:
        counts = " or ".join(str(n) for n in fields)
        raise ValueError(
            f"cron {value!r} is not a valid cron expression: it must have {counts} fields "
            "(minute hour day-of-month month day-of-week" + (", second)" if 6 in fields else ")")
        )
    if not croniter.is_valid(value):
        raise ValueError(f"cron {value!r} is not a valid cron expression")
    try:
        croniter(value, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception as exc:  # croniter's CroniterBadDateError and kin
        raise ValueError(f"cron {value!r} never fires (e.g. the 30th of February)") from exc
    return value


def check_timezone(value: str) -> str:
    """`value` if it names an IANA time zone; else a `ValueError` with an example."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r}: not an IANA time zone (such as 'Europe/Warsaw' or 'UTC')"
        ) from None
    return value


class NodeSpec(BaseModel):
    """One node of a workflow: what it does (`type`, `params`) and when (`after`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: str
    params: dict[str, JsonValue] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)
    retry: RetryPolicy | None = None
    timeout_s: float | None = Field(None, gt=0)
    description: str = ""

    @field_validator("after", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def dependencies(self) -> list[tuple[str, str | None]]:
        """`after` as `(node_id, branch)` pairs; branch is None for a plain dependency."""
        deps: list[tuple[str, str | None]] = []
        for entry in self.after:
            node_id, _, branch = entry.partition(".")
            deps.append((node_id, branch or None))
        return deps

    def dependency_ids(self) -> list[str]:
        """The ids of the nodes this one waits for, without branches, each once."""
        return list(dict.fromkeys(node_id for node_id, _ in self.dependencies()))


class WorkflowSpec(BaseModel):
    """A workflow file: its name, default variables, optional schedule, nodes and output."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    schedule: ScheduleSpec | None = None
    nodes: list[NodeSpec] = Field(min_length=1)
    output: JsonValue = None
    allow_secret_variables: bool = False

    def node(self, node_id: str) -> NodeSpec:
        """The node with that id (KeyError when there is none)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def final_nodes(self) -> list[NodeSpec]:
        """Nodes that no other node waits for: their outputs are the default `results`."""
        needed = {dep for node in self.nodes for dep in node.dependency_ids()}
        return [node for node in self.nodes if node.id not in needed]


def _where(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """A readable place for a pydantic error location: `node 'fetch', field 'params.x'`."""
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        nodes = data.get("nodes") or []
        node = nodes[loc[1]] if loc[1] < len(nodes) and isinstance(nodes[loc[1]], Mapping) else {}
        label = f"node '{node['id']}'" if "id" in node else f"node #{loc[1] + 1}"
        rest = ".".join(str(p) for p in loc[2:])
        return f"{label}, field '{rest}'" if rest else label
    return f"field '{'.'.join(str(p) for p in loc)}'" if loc else "the document"


def _name_of(data: Any, source: str | None) -> str:
    name = data.get("name") if isinstance(data, Mapping) else None
    label = f"workflow '{name}'" if name else "workflow"
    return f"{label} ({source})" if source else label


def parse_workflow(
    data: Any, known_types: Iterable[str] | None = None, source: str | None = None
) -> WorkflowSpec:
    """Validate a workflow given as a dict; raise `WorkflowValidationError` listing every problem.

    Args:
        data: the parsed workflow file.
        known_types: node types that exist; when given, an unknown `type` is an error.
        source: where the data came from (a file path), for the messages.
    """
    label = _name_of(data, source)
    if not isinstance(data, Mapping):
        raise WorkflowValidationError(f"{label}: a workflow must be a mapping, got {type(data).__name__}")
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{label}: {_where(data, e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise WorkflowValidationError("\n".join(problems), problems) from exc
    problems = [f"{label}: {p}" for p in graph_problems(spec, known_types)]
    problems += [f"{label}: {p}" for p in template_problems(spec)]
    if problems:
        raise WorkflowValidationError("\n".join(problems), problems)
    return spec


def graph_problems(spec: WorkflowSpec, known_types: Iterable[str] | None = None) -> list[str]:
    """What is wrong with the node graph: ids, dependencies, branches, cycles, node types."""
    from orchestrator.registry import branches_of  # the registry knows which types branch

    problems: list[str] = []
    seen: set[str] = set()
    for node in spec.nodes:
        if not NODE_ID.match(node.id):
            problems.append(f"node '{node.id}': field 'id': must match [a-z][a-z0-9_]*")
        if node.id in seen:
            problems.append(f"node '{node.id}': field 'id': duplicate id; node ids must be unique")
        seen.add(node.id)
    known = set(known_types) if known_types is not None else None
    types = {node.id: node.type for node in spec.nodes}
    for node in spec.nodes:
        if known is not None and node.type not in known:
            problems.append(
                f"node '{node.id}': field 'type': unknown node type '{node.type}' "
                f"(known: {', '.join(sorted(known))})"
            )
        for dep, branch in node.dependencies():
            if dep not in types:
                problems.append(f"node '{node.id}': field 'after': '{dep}' names no node of this workflow")
            elif dep == node.id:
                problems.append(f"node '{node.id}': field 'after': a node cannot wait for itself")
            elif branch is not None and branch not in branches_of(types[dep]):
                allowed = branches_of(types[dep])
                what = f"its branches are {', '.join(allowed)}" if allowed else "it has no branches"
                problems.append(
                    f"node '{node.id}': field 'after': '{dep}.{branch}' is not a branch of "
                    f"'{dep}' (type '{types[dep]}'; {what})"
                )
    if not problems:
        cycle = find_cycle(spec)
        if cycle:
            problems.append(f"the nodes form a cycle: {' -> '.join([*cycle, cycle[0]])}")
    return problems


def find_cycle(spec: WorkflowSpec) -> list[str]:
    """The nodes of one dependency cycle, in order, or [] when the graph is acyclic."""
    deps = {node.id: node.dependency_ids() for node in spec.nodes}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node_id: str) -> list[str]:
        state[node_id] = 1
        path.append(node_id)
        for dep in deps.get(node_id, []):
            if state.get(dep) == 1:
                return list(reversed(path[path.index(dep) :]))
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node_id] = 2
        return []

    for node_id in deps:
        if node_id not in state and (found := visit(node_id)):
            return found
    return []


def template_problems(spec: WorkflowSpec) -> list[str]:
    """Template syntax errors in params and output, each naming the node and the parameter."""
    from orchestrator.templating import syntax_errors

    problems = [f"node '{n.id}': {p}" for n in spec.nodes for p in syntax_errors(n.params, "params")]
    problems += syntax_errors(spec.output, "output")
    return problems


def load_workflow_file(path: str | Path, known_types: Iterable[str] | None = None) -> WorkflowSpec:
    """Read and validate a workflow file (`.yaml`, `.yml` or `.json`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WorkflowValidationError(f"{path}: cannot read the file: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise WorkflowValidationError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    return parse_workflow(data, known_types, source=str(path))
