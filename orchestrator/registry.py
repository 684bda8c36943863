"""Node types are plugins: a pydantic params model and a function, found through entry points.

Each node type lives in its own module and exposes a `NodeType`. The built-in ones are the
modules of the `workers` package; packages add types through the `orchestrator.node_types`
entry-point group;
`ORCH_PLUGINS` names extra modules to import (each exposing `node_type` or `node_types`).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from orchestrator.constants import ENTRY_POINT_GROUP
from orchestrator.errors import ConfigurationError

if TYPE_CHECKING:
    from orchestrator.app import OrchestratorApp
    from orchestrator.settings import Settings
    from orchestrator.spec import NodeSpec
    from orchestrator.store import RunStore

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class NodeContext:
    """What a node function knows about where it runs.

    Attributes:
        run_id, workflow, node_id: where this is.
        attempt: 1 on the first try, 2 on the first retry, …
        variables: the run's variables.
        outputs: outputs of the nodes that finished before this one, by id.
        deadline: UTC time by which the node must be done (from `timeout_s`), or None.
        store, settings: for node types that keep data or read configuration.
        app: the Celery app, for node types that start runs.
        spec: the node's own spec (its `after`, `params` as written), for node types that
            combine their inputs (`merge`) or render templates themselves.
    """

    run_id: str
    workflow: str
    node_id: str
    attempt: int
    variables: Mapping[str, Any]
    outputs: Mapping[str, Any]
    store: RunStore
    settings: Settings
    deadline: datetime | None = None
    run: Mapping[str, Any] = field(default_factory=dict)
    app: OrchestratorApp | None = None
    spec: NodeSpec | None = None

    @property
    def logger(self) -> logging.Logger:
        """A logger named after the node, for messages in the worker log."""
        return logging.getLogger(f"orchestrator.node.{self.node_id}")

    def seconds_left(self) -> float | None:
        """Seconds until the deadline, or None when the node has no timeout."""
        if self.deadline is None:
            return None
        return (self.deadline - datetime.now(UTC)).total_seconds()


@dataclass(frozen=True)
class Wait:
    """Returned by a node function to wait for a run without holding a worker slot.

    The engine marks the node `waiting`, then calls the type's `resume` on each poll (every
    `poll_interval_s`) and at once when an awaited run ends (a run whose `parent_run_id` and
    `parent_node_id` are this node's; `run_id` names the one awaited, if there is one),
    until `resume` returns an output or the timeout passes (then `resume` is called with
    `timed_out=True` and must answer). `resume` may raise `NodeError` to fail the node.
    """

    run_id: str | None
    timeout_s: float
    poll_interval_s: float
    data: dict[str, Any] = field(default_factory=dict)


Resume = Callable[[Mapping[str, Any], NodeContext, bool], Any]


@dataclass(frozen=True)
class NodeType(Generic[P]):
    """A kind of node: its name (the `type:` in workflow files), params model and function.

    The function takes the rendered, validated params and a `NodeContext` and returns a
    JSON-able output; it raises to fail the node. `branches` names the branches other nodes
    may follow (`after: [check.yes]`); such a node's output holds the taken one as `branch`.
    """

    name: str
    params: type[P]
    run: Callable[[P, NodeContext], Any]
    description: str = ""
    branches: tuple[str, ...] = ()
    resume: Resume | None = None
    raw_params: frozenset[str] = frozenset()
    """Params the engine passes as written, unrendered (the type renders them itself)."""
    pure: bool = False
    """The function only computes its output from its params and context, quickly, with no
    effect outside (no messages sent, no data kept). The engine then skips marking the node
    `running`: it records the node once, when it ends, so after another node of a chain
    (which hands it the run document) it costs its run a single update. Such a node may be
    computed twice (a message delivered again); only one end is recorded."""

    def __post_init__(self) -> None:
        if self.pure and self.resume is not None:
            raise ConfigurationError(f"node type '{self.name}' cannot be pure and wait (it has `resume`)")


BUILTIN_BRANCHES: dict[str, tuple[str, ...]] = {"condition": ("yes", "no")}


@dataclass
class Registry:
    """The node types known to this process, by name."""

    types: dict[str, NodeType[Any]] = field(default_factory=dict)

    def add(self, node_type: NodeType[Any]) -> None:
        """Register a node type; a second type with the same name is a configuration error."""
        existing = self.types.get(node_type.name)
        if existing is not None and existing is not node_type:
            raise ConfigurationError(f"two node types are named '{node_type.name}'")
        self.types[node_type.name] = node_type

    def get(self, name: str) -> NodeType[Any]:
        """The node type with that name."""
        try:
            return self.types[name]
        except KeyError:
            known = ", ".join(sorted(self.types))
            raise ConfigurationError(f"unknown node type '{name}' (known: {known})") from None

    def handed_types(self) -> frozenset[str]:
        """Names of the types whose nodes run from the run document the node before them in
        a chain hands on (`orchestrator.handoff`): every type that does not wait."""
        return frozenset(name for name, node_type in self.types.items() if node_type.resume is None)

    def names(self) -> list[str]:
        """Names of every registered type, sorted."""
        return sorted(self.types)


def _node_types_of(obj: Any, origin: str) -> Iterable[NodeType[Any]]:
    if isinstance(obj, NodeType):
        return [obj]
    for attr in ("node_types", "node_type"):
        found = getattr(obj, attr, None)
        if isinstance(found, NodeType):
            return [found]
        if isinstance(found, list | tuple) and all(isinstance(t, NodeType) for t in found):
            return list(found)
    raise ConfigurationError(f"{origin} defines no NodeType (expected `node_type` or `node_types`)")


@lru_cache(maxsize=8)
def load_registry(plugin_modules: tuple[str, ...] = ()) -> Registry:
    """Every built-in node type, those of the entry-point group, and those of the given modules."""
    registry = Registry()
    for module_name in builtin_modules():
        module = importlib.import_module(module_name)
        for node_type in _node_types_of(module, f"module '{module_name}'"):
            registry.add(node_type)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigurationError(
                f"node type plugin '{ep.name}' ({ep.value}) failed to load: {exc}"
            ) from exc
        for node_type in _node_types_of(loaded, f"entry point '{ep.name}'"):
            registry.add(node_type)
    for module_name in plugin_modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"ORCH_PLUGINS names '{module_name}', which cannot be imported: {exc}"
            ) from exc
        for node_type in _node_types_of(module, f"module '{module_name}'"):
            registry.add(node_type)
    return registry


def builtin_modules() -> list[str]:
    """Names of the modules of the `workers` package, one per built-in node type."""
    import workers

    return sorted(
        f"workers.{info.name}"
        for info in pkgutil.iter_modules(workers.__path__)
        if not info.name.startswith("_")
    )


def branches_of(type_name: str) -> tuple[str, ...]:
    """The branches a node type offers (empty for types that do not branch)."""
    try:
        registry = load_registry()
    except ConfigurationError:
        return BUILTIN_BRANCHES.get(type_name, ())
    node_type = registry.types.get(type_name)
    return node_type.branches if node_type else BUILTIN_BRANCHES.get(type_name, ())
