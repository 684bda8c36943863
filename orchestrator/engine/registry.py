"""Node types are plugins: a pydantic params model and a function, found through entry points.

Each node type lives in its own module and exposes a `NodeType`. The built-in ones are the
modules of the `workers` package, one per type and named like it: they are listed without
being imported, and each is imported when its type is first needed (to run a node, or to ask
whether it branches or waits), so that commands that only read runs or send workflows do not
load pandas and the like. Packages add types through the `orchestrator.node_types`
entry-point group; `ORCH_PLUGINS` names extra modules to import (each exposing `node_type` or
`node_types`). Both are imported when the registry is built.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from orchestrator.constants import ENTRY_POINT_GROUP
from orchestrator.definitions.spec import DEFAULT_BRANCHES
from orchestrator.errors import ConfigurationError
from orchestrator.store.node_logs import NOT_FOR_NODE_LOG

if TYPE_CHECKING:
    from celery import Celery

    from orchestrator.definitions.spec import NodeSpec
    from orchestrator.settings import Settings
    from orchestrator.store.run_store import RunStore

P = TypeVar("P", bound=BaseModel)


class NodeLogger(logging.LoggerAdapter[logging.Logger]):
    """A node's logger: each record at INFO or above goes to the node's log (`sink`) and,
    when the logger is enabled for its level, to the process's log handlers."""

    def __init__(self, logger: logging.Logger, sink: Callable[[str, str], None] | None) -> None:
        super().__init__(logger, {})
        self._sink = sink

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self._sink is not None and level >= logging.INFO:
            text = str(msg) % args if args else str(msg)
            exc_info = kwargs.get("exc_info")
            if exc_info:
                info = sys.exc_info() if exc_info is True else exc_info
                if isinstance(info, BaseException):
                    info = (type(info), info, info.__traceback__)
                if info[0] is not None:
                    text += "\n" + logging.Formatter().formatException(info)
            self._sink(logging.getLevelName(level), text)
        if self.logger.isEnabledFor(level):
            kwargs["extra"] = {**(kwargs.get("extra") or {}), NOT_FOR_NODE_LOG: True}
            self.logger.log(level, msg, *args, **kwargs)


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
        app: the Celery app, for node types that start runs (`orchestrator.engine.app.app_of` gives
            it as the orchestrator's app).
        spec: the node's own spec (its `after`, `params` as written), for node types that
            combine their inputs (`merge`) or render templates themselves.
        log_sink: adds a line (level name, text) to the node's log (`orchestrator.store.node_logs`);
            None outside a worker. `logger` writes there too.
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
    app: Celery | None = None
    spec: NodeSpec | None = None
    log_sink: Callable[[str, str], None] | None = None

    @property
    def logger(self) -> NodeLogger:
        """A logger named after the node: its records at INFO and above go to the node's log
        (whatever the worker's log level) and, as the worker's log level allows, to its log."""
        return NodeLogger(logging.getLogger(f"orchestrator.node.{self.node_id}"), self.log_sink)

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


@dataclass(frozen=True)
class AfterEnd:
    """Returned by a node function whose effect must happen only once its end is recorded:
    the run document keeps its output first, then the effect follows (an outbox).

    The engine records `output` as the node's; then it calls `send`, or `drop` when the run
    was over before the node's end could be recorded (and no other delivery recorded it).
    `run_workflow`'s `fire_and_forget` creates its child run's document, `pending`, before
    returning; `send` puts the child's canvas on the broker, `drop` ends the child unsent.
    Both must be safe to call from any delivery of the node's message; a failure of either is
    logged (the sweeper sends a run left unsent).
    """

    output: Any
    send: Callable[[], None]
    drop: Callable[[], None]


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
    sees_all_nodes: bool = False
    """The function may read any node's output (`python` hands them all to its code): in a
    wide workflow its node reads the whole run document, not only what its params name."""
    node_params: frozenset[str] = frozenset()
    """Params that hold a node the type runs (`{type, params}`, as `parameter_loop`'s `body`):
    at registration their type must exist and their literal params fit it."""
    pure: bool = False
    """The function only computes its output from its params and context, quickly, with no
    effect outside (no messages sent, no data kept) but those it defers to its end
    (`AfterEnd`) and may repeat. The engine then skips marking the node `running`: it records
    the node once, when it ends, so after another node of a chain (which hands it the run
    document) it costs its run a single update. Such a node may be computed twice (a message
    delivered again); only one end is recorded. A type with `resume` may be pure only for
    the nodes that cannot wait (`may_wait`)."""
    may_wait: Callable[[Mapping[str, Any]], bool] | None = None
    """For a type with `resume` whose nodes wait only with some params: whether a node with
    these params, as written, may return `Wait` (a templated param that decides it must
    count as "may"). None: every node of a type with `resume` may wait. A node that cannot
    wait runs as one of a type without `resume` does: handed the run document by the node
    before it, and, when the type is `pure`, recorded once at its end."""
    rerun_safe: bool = True
    """Whether a node whose worker was lost while it ran may be run again (at-least-once).
    False for a type whose effect must not happen twice and cannot be checked (a message
    sent): such a node fails instead, saying so."""
    imports: tuple[str, ...] = ()
    """Modules the function imports when it runs (heavy libraries kept out of the type's
    module, so that checking a workflow does not load them); a worker imports them at start."""

    def __post_init__(self) -> None:
        if self.pure and self.resume is not None and self.may_wait is None:
            raise ConfigurationError(
                f"node type '{self.name}' cannot be pure and wait (it has `resume`): give it "
                "`may_wait` to say which of its nodes cannot wait"
            )

    def waits(self, params: Mapping[str, Any]) -> bool:
        """Whether a node of this type with these params (as written) may wait."""
        return self.resume is not None and (self.may_wait is None or self.may_wait(params))

    def runs_handed(self, params: Mapping[str, Any]) -> bool:
        """Whether a node of this type with these params may run from the run document the
        node before it hands on (`orchestrator.store.handoff`): one that cannot wait."""
        return not self.waits(params)

    def pure_for(self, params: Mapping[str, Any]) -> bool:
        """Whether a node of this type with these params is recorded once, at its end."""
        return self.pure and not self.waits(params)


class Registry:
    """The node types known to this process, by name.

    A built-in type (a module of `workers`, named like the type) is imported the first time it
    is asked for, so that commands that never run or check a node do not pay for every node
    type's libraries. Types given to `add` (plugins) are there from the start.

    Args:
        builtin: type name -> the module that defines it, imported on first use.
    """

    def __init__(self, builtin: Mapping[str, str] | None = None) -> None:
        self._builtin: dict[str, str] = dict(builtin or {})
        self._types: dict[str, NodeType[Any]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._types or name in self._builtin

    def add(self, node_type: NodeType[Any]) -> None:
        """Register a node type; a second type with the same name is a configuration error."""
        existing = self._types.get(node_type.name)
        if existing is None and node_type.name in self._builtin:
            existing = self._import(node_type.name)  # the same object re-exported, or a clash
        if existing is not None and existing is not node_type:
            raise ConfigurationError(f"two node types are named '{node_type.name}'")
        self._types[node_type.name] = node_type

    def get(self, name: str) -> NodeType[Any]:
        """The node type with that name, its module imported if it was not yet."""
        node_type = self._types.get(name)
        if node_type is not None:
            return node_type
        if name in self._builtin:
            return self._import(name)
        raise ConfigurationError(f"unknown node type '{name}' (known: {', '.join(self.names())})")

    def branches(self, type_name: str) -> tuple[str, ...]:
        """The branches a type offers (empty for types that do not branch); imports only that
        type's module (the built-in defaults when it cannot be imported)."""
        try:
            return self.get(type_name).branches if type_name in self else ()
        except ConfigurationError:
            return DEFAULT_BRANCHES.get(type_name, ())

    def names(self) -> list[str]:
        """Names of every known type, sorted; imports nothing."""
        return sorted(self._builtin.keys() | self._types.keys())

    @property
    def types(self) -> dict[str, NodeType[Any]]:
        """Every type by name. Imports every built-in type's module: prefer `get` and `names`."""
        return {name: self.get(name) for name in self.names()}

    def handed_types(self, names: Iterable[str] | None = None) -> frozenset[str]:
        """Names of the types whose nodes run from the run document the node before them in
        a chain hands on (`orchestrator.store.handoff`): every type that does not wait. (A
        node of a type that waits only with some params is handed it when it cannot wait:
        `NodeType.runs_handed`.)

        Args:
            names: the types to consider (a workflow's), so that only their modules are
                imported; every known type when omitted. Unknown names are left out.
        """
        considered = self.names() if names is None else set(names)
        return frozenset(name for name in considered if name in self and self.get(name).resume is None)

    def import_all(self) -> None:
        """Import every type's module and the libraries its function imports when it runs
        (`NodeType.imports`): what a worker does once at start, before its pool forks, so that
        no node pays for imports on its first run. A type that fails does not stop the others;
        the failures are raised together at the end."""
        failures: list[str] = []
        for name in self.names():
            try:
                for module_name in self.get(name).imports:
                    importlib.import_module(module_name)
            except (ConfigurationError, ImportError) as exc:
                failures.append(
                    str(exc) if isinstance(exc, ConfigurationError) else f"node type '{name}': {exc}"
                )
        if failures:
            raise ConfigurationError("; ".join(failures))

    def _import(self, name: str) -> NodeType[Any]:
        """Import the module of a built-in type and check that it defines that type.

        Safe to race: two threads get the same module object, hence the same NodeType.
        """
        module_name = self._builtin[name]
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigurationError(
                f"node type '{name}': module '{module_name}' failed to import: {exc}"
            ) from exc
        found = _node_types_of(module, f"module '{module_name}'")
        if [t.name for t in found] != [name]:
            defined = ", ".join(f"'{t.name}'" for t in found)
            raise ConfigurationError(
                f"module '{module_name}' defines node type {defined}, but a built-in module must "
                f"define one node type, named like the module ('{name}'): rename the type or the module"
            )
        return self._types.setdefault(name, found[0])


def _node_types_of(obj: Any, origin: str) -> list[NodeType[Any]]:
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
    """Every built-in node type (imported on first use), those of the entry-point group and
    those of the given modules (both imported now: they are the user's)."""
    registry = Registry({module_name.rpartition(".")[2]: module_name for module_name in builtin_modules()})
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
    """Names of the modules of the `workers` package, one per built-in node type (the module's
    name is the type's name); found without importing them."""
    import workers

    return sorted(
        f"workers.{info.name}"
        for info in pkgutil.iter_modules(workers.__path__)
        if not info.name.startswith("_")
    )
