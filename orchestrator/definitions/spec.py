"""Workflow specs: pydantic models of workflow files, and their validation.

Validation happens before anything is stored so that a bad workflow is refused with every
problem listed, each naming the workflow, the node and the field, before anything runs:
values MongoDB or JSON cannot hold (`orchestrator.definitions.json_values`) before the models see them,
then the graph, the params against their node types, the templates (parsed, never compiled
or rendered), names, secrets and sizes. Files are read by `orchestrator.definitions.workflow_files`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from orchestrator.definitions.json_values import show, value_problems
from orchestrator.definitions.secrets import secret_names
from orchestrator.errors import ConfigurationError, WorkflowValidationError

NODE_ID = re.compile(r"[a-z][a-z0-9_]*")
"""What a node id must be, whole: use `fullmatch` (`$` would let a trailing newline through)."""
MAX_WORKFLOW_BYTES = 4 * 1024 * 1024
"""The largest workflow as stored (BSON), well within MongoDB's 16 MiB per document."""
_CONTROL = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
"""Unicode categories refused in names: control, format (bidi overrides), line breaks, surrogates."""


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
        nodes = data.get("nodes")
        nodes = nodes if isinstance(nodes, list) else []
        node = nodes[loc[1]] if loc[1] < len(nodes) and isinstance(nodes[loc[1]], Mapping) else {}
        label = f"node {show(node['id'])}" if "id" in node else f"node #{loc[1] + 1}"
        rest = _path(loc[2:])
        return f"{label}, field '{rest}'" if rest else label
    return f"field '{_path(loc)}'" if loc else "the document"


def _path(loc: tuple[int | str, ...], most: int = 8) -> str:
    """`params.x.0`, cut after `most` parts (a place 64 levels deep stays readable)."""
    shown = ".".join(str(p) for p in loc[:most])
    return f"{shown}.…" if len(loc) > most else shown


def _name_of(data: Any, source: str | None) -> str:
    name = data.get("name") if isinstance(data, Mapping) else None
    label = f"workflow {show(name, 200)}" if isinstance(name, str) and name else "workflow"
    return f"{label} ({source})" if source else label


def parse_workflow(
    data: Any,
    known_types: KnownTypes = None,
    source: str | None = None,
    *,
    max_variables_bytes: int | None = None,
) -> WorkflowSpec:
    """Validate a workflow given as a dict; raise `WorkflowValidationError` listing every problem.

    Args:
        data: the parsed workflow file.
        known_types: node types that exist; when given, an unknown `type` is an error, and a
            catalog that gives each type's params model (`Registry`) has literal params checked.
        source: where the data came from (a file path), for the messages.
        max_variables_bytes: the most a run's variables may take (half of
            `Settings.max_run_doc_bytes`); None: not checked.
    """
    label = _name_of(data, source)
    if not isinstance(data, Mapping):
        raise WorkflowValidationError(f"{label}: a workflow must be a mapping, got {type(data).__name__}")
    problems = [f"{label}: {_where(data, loc)}: {problem}" for loc, problem in value_problems(data)]
    if problems:
        raise WorkflowValidationError("\n".join(problems), problems)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{label}: {_where(data, e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise WorkflowValidationError("\n".join(problems), problems) from exc
    found = [
        *name_problems(spec),
        *graph_problems(spec, known_types),
        *params_problems(spec, known_types),
        *template_problems(spec),
        *size_problems(spec, max_variables_bytes),
        *secret_problems(spec),
    ]
    if found:
        problems = [f"{label}: {p}" for p in found]
        raise WorkflowValidationError("\n".join(problems), problems)
    return spec


def name_problems(spec: WorkflowSpec) -> list[str]:
    """A workflow name with control characters (a newline, NUL, a bidi override) is refused:
    names are shown in terminals and logs and typed at the command line."""
    bad = sorted({char for char in spec.name if unicodedata.category(char) in _CONTROL})
    if not bad:
        return []
    codes = ", ".join(f"U+{ord(char):04X}" for char in bad)
    return [f"field 'name': holds control characters ({codes}); a workflow name must be printable text"]


def secret_problems(spec: WorkflowSpec) -> list[str]:
    """Default or scheduled variables named like secrets, unless the workflow allows them:
    a secret written in a workflow file would be copied into every run's document."""
    if spec.allow_secret_variables:
        return []
    places = [("variables", spec.variables)]
    if spec.schedule is not None:
        places.append(("schedule.variables", spec.schedule.variables))
    return [
        f"field '{field}.{name}': looks like a secret; secrets belong in the environment of the "
        "workers (or a settings file), not in workflow files. Set `allow_secret_variables: true` "
        "to keep it anyway"
        for field, values in places
        for name in secret_names(values)
    ]


def size_problems(spec: WorkflowSpec, max_variables_bytes: int | None = None) -> list[str]:
    """Variables that no run could hold (a run's variables take at most half its document, as
    the launcher checks) and a workflow too large to store."""
    import bson  # pymongo's; measured as the launcher and the store measure

    problems = []
    if max_variables_bytes is not None:
        scheduled = spec.schedule.variables if spec.schedule else {}
        size = len(bson.encode({"variables": {**spec.variables, **scheduled}}))
        if size > max_variables_bytes:
            problems.append(
                f"field 'variables': the variables take {size / 1024:,.0f} KiB; a run's variables may "
                f"take {max_variables_bytes / 1024:,.0f} KiB, half its document's limit "
                "(ORCH_MAX_RUN_DOC_BYTES): pass identifiers (a symbol, a date, a key), not datasets"
            )
    size = len(bson.encode(spec.model_dump(mode="json")))
    if size > MAX_WORKFLOW_BYTES:
        problems.append(
            f"the workflow takes {size / 1024:,.0f} KiB; a workflow may take at most "
            f"{MAX_WORKFLOW_BYTES / 1024:,.0f} KiB: keep data out of it (in variables given to runs)"
        )
    return problems


DEFAULT_BRANCHES: dict[str, tuple[str, ...]] = {"condition": ("yes", "no")}
"""The branches of the built-in types that branch, for checks made without a catalog."""


@runtime_checkable
class NodeTypeCatalog(Protocol):
    """What checking a workflow needs to know of the node types (`Registry` is one)."""

    def names(self) -> list[str]:
        """Every node type's name."""
        ...

    def branches(self, type_name: str) -> tuple[str, ...]:
        """The branches a type offers (empty for types that do not branch)."""
        ...


class ParamsModel(Protocol):
    """What checking a node's params needs of its type (`NodeType` is one)."""

    @property
    def params(self) -> type[BaseModel]:
        """The params model."""
        ...

    @property
    def raw_params(self) -> frozenset[str]:
        """Params passed as written, unrendered: validated as written."""
        ...

    @property
    def node_params(self) -> frozenset[str]:
        """Params that hold a node (`{type, params}`) the type runs: checked like a node."""
        ...


@runtime_checkable
class ParamsCatalog(NodeTypeCatalog, Protocol):
    """A catalog that also gives each type's params model (`Registry` is one): with it, the
    literal params of each node are checked against its type's model at registration."""

    def get(self, name: str) -> ParamsModel:
        """The node type with that name."""
        ...


KnownTypes = NodeTypeCatalog | Iterable[str] | None
"""The node types a workflow may use: a catalog, their names (branches then as the built-in
types have them), or None (any type)."""


def _type_knowledge(known_types: KnownTypes) -> tuple[set[str] | None, Callable[[str], tuple[str, ...]]]:
    """The names of the known types (None: any), and what gives a type's branches."""
    if isinstance(known_types, NodeTypeCatalog):
        return set(known_types.names()), known_types.branches
    known = set(known_types) if known_types is not None else None
    return known, lambda type_name: DEFAULT_BRANCHES.get(type_name, ())


def graph_problems(spec: WorkflowSpec, known_types: KnownTypes = None) -> list[str]:
    """What is wrong with the node graph: ids, dependencies, branches, cycles, node types."""
    known, branches_of = _type_knowledge(known_types)
    problems: list[str] = []
    seen: set[str] = set()
    for node in spec.nodes:
        if not NODE_ID.fullmatch(node.id):
            problems.append(f"node {show(node.id)}: field 'id': must match [a-z][a-z0-9_]*")
        if node.id in seen:
            problems.append(f"node {show(node.id)}: field 'id': duplicate id; node ids must be unique")
        seen.add(node.id)
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
        if len(cycle) > 12:  # a long one: its ends
            shown = [*cycle[:5], f"… ({len(cycle) - 10} more nodes) …", *cycle[-5:]]
            problems.append(
                f"the nodes form a cycle of {len(cycle)} nodes: {' -> '.join([*shown, cycle[0]])}"
            )
        elif cycle:
            problems.append(f"the nodes form a cycle: {' -> '.join([*cycle, cycle[0]])}")
    return problems


def find_cycle(spec: WorkflowSpec) -> list[str]:
    """The nodes of one dependency cycle, in order, or [] when the graph is acyclic.

    A depth-first walk with its own stack, not recursion: a chain of thousands of nodes is
    checked like any other.
    """
    deps = {node.id: node.dependency_ids() for node in spec.nodes}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in deps:
        if root in state:
            continue
        state[root] = 1
        path, pending = [root], [iter(deps[root])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:  # every dependency of the node on top is done
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return list(reversed(path[path.index(dep) :]))
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(deps.get(dep, [])))
    return []


def params_problems(spec: WorkflowSpec, known_types: KnownTypes = None) -> list[str]:
    """Params that do not fit their type's model, when `known_types` gives the models.

    A param whose value holds a template is checked when the node runs, once rendered: here
    only its name is (an unknown param is refused); every literal value is checked in full.
    Params the type takes as written (`raw_params`) are checked as written.
    """
    if not isinstance(known_types, ParamsCatalog):
        return []
    names = set(known_types.names())
    problems: list[str] = []
    for node in spec.nodes:
        if node.type not in names:
            continue  # graph_problems names it
        try:
            node_type = known_types.get(node.type)
        except ConfigurationError as exc:  # its module does not import: it could not run either
            problems.append(f"node {show(node.id)}: field 'type': {exc}")
            continue
        problems += node_params_problems(node, node_type)
        for key in sorted(node_type.node_params & node.params.keys()):
            problems += _inner_node_problems(node, key, known_types, names)
    return problems


def _inner_node_problems(node: NodeSpec, key: str, known_types: ParamsCatalog, names: set[str]) -> list[str]:
    """A node held in a param (`parameter_loop`'s `body`): its type known, its literal params fit.

    Its templated params are checked once rendered, as a node's are; a type given by a
    template is checked when the node runs."""
    from orchestrator.definitions.templating import contains_template

    inner = node.params[key]
    if not isinstance(inner, Mapping) or not isinstance(inner.get("type"), str):
        return []  # the outer type's model says what is wrong with it
    type_name = inner["type"]
    if contains_template(type_name):
        return []
    where = f"node {show(node.id)}: field 'params.{key}"
    if type_name not in names:
        return [f"{where}.type': unknown node type {show(type_name)} (known: {', '.join(sorted(names))})"]
    params = inner.get("params", {})
    if not isinstance(params, Mapping):
        return []
    try:
        inner_type = known_types.get(type_name)
    except ConfigurationError as exc:
        return [f"{where}.type': {exc}"]
    as_node = NodeSpec(id=node.id, type=type_name, params=dict(params))
    return [
        problem.replace("field 'params.", f"field 'params.{key}.params.", 1)
        for problem in node_params_problems(as_node, inner_type)
    ]


def _checked_now(loc: tuple[int | str, ...], kind: str, templated: set[str]) -> bool:
    """Whether a params error is reported at registration: not for a templated param (it is
    checked once rendered) unless the param is unknown, nor for the params as a whole (a
    model's own check) when any is templated."""
    if not loc:
        return not templated
    return loc[0] not in templated or kind == "extra_forbidden"


def node_params_problems(node: NodeSpec, node_type: ParamsModel) -> list[str]:
    """What is wrong with one node's literal params, as `node 'x': field 'params.y': …`."""
    from orchestrator.definitions.templating import contains_template

    raw = node_type.raw_params
    templated = {key for key, value in node.params.items() if key not in raw and contains_template(value)}
    try:
        node_type.params.model_validate(node.params)
    except ValidationError as exc:
        return [
            f"node {show(node.id)}: field '{'.'.join(str(p) for p in ('params', *e['loc']))}': {e['msg']}"
            for e in exc.errors()
            if _checked_now(e["loc"], e["type"], templated)
        ]
    except Exception as exc:  # a model's own validator that fails on a template it was not meant to see
        if templated:
            return []
        return [f"node {show(node.id)}: field 'params': {type(exc).__name__}: {exc}"]
    return []


def template_problems(spec: WorkflowSpec) -> list[str]:
    """Template syntax errors in params and output, each naming the node and the parameter."""
    from orchestrator.definitions.templating import syntax_errors

    problems = [f"node '{n.id}': {p}" for n in spec.nodes for p in syntax_errors(n.params, "params")]
    problems += syntax_errors(spec.output, "output")
    return problems
