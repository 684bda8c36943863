"""The registry imports a built-in node type only when that type is needed.

Building the app, the command line, compiling a workflow and checking its branches import
no node type they do not use, and none of the heavy libraries some types use (pandas, NumPy,
ta, python-telegram-bot, httpx). What a process has imported is only seen in a fresh one,
so those tests run their code in a subprocess, without `ORCH_PLUGINS`.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator.engine.registry import NodeContext, NodeType, Registry, builtin_modules
from orchestrator.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "numpy", "ta", "telegram", "httpx")
BUILD_APP = """
from orchestrator.engine.factory import create_app
from orchestrator.settings import Settings

app = create_app(Settings(REDIS_URL="redis://127.0.0.1:1/0", MONGO_URL="mongodb://127.0.0.1:1/x"))
"""


def imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter (without ORCH_PLUGINS) has imported once `code` ran."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {name: value for name, value in os.environ.items() if name != "ORCH_PLUGINS"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return set(modules)


def node_type_modules(modules: set[str]) -> set[str]:
    return {name for name in modules if name.startswith("workers.")}


def test_building_the_app_when_the_cli_is_imported_too_then_no_node_type_or_heavy_library_is_imported() -> (
    None
):
    modules = imported_by(BUILD_APP + "import orchestrator.cli\nassert 'workers.set' in app.tasks\n")

    assert not modules & {*HEAVY, "workers.market_data", "workers.indicators"}
    assert node_type_modules(modules) == set()


def test_registry_get_when_a_type_is_first_asked_for_then_its_module_is_imported() -> None:
    modules = imported_by(
        BUILD_APP
        + """
import sys

assert "workers.indicators" not in sys.modules
node_type = app.registry.get("indicators")
assert node_type.name == "indicators", node_type.name
assert sys.modules["workers.indicators"].node_type is node_type
"""
    )

    assert "workers.indicators" in modules
    assert not modules & set(HEAVY)  # the type's libraries wait until one of its nodes runs


def test_builtin_modules_when_imported_then_each_defines_the_node_type_named_like_it() -> None:
    for module_name in builtin_modules():
        module = importlib.import_module(module_name)
        type_name = module_name.removeprefix("workers.")

        assert module.node_type.name == type_name


def test_registry_get_when_a_module_defines_a_type_of_another_name_then_configuration_error() -> None:
    registry = Registry({"setter": "workers.set"})

    with pytest.raises(
        ConfigurationError, match=r"defines node type 'set'.*named like the module \('setter'\)"
    ):
        registry.get("setter")


def test_registry_names_when_asked_then_lists_every_builtin_type_without_importing_it() -> None:
    modules = imported_by(
        """
from orchestrator.engine.registry import builtin_modules, load_registry

names = load_registry().names()
assert names == [m.removeprefix("workers.") for m in builtin_modules()], names
assert "indicators" in load_registry()
"""
    )

    assert node_type_modules(modules) == set()


def test_compiling_a_workflow_when_it_has_only_set_nodes_then_no_other_node_type_is_imported() -> None:
    modules = imported_by(
        BUILD_APP
        + """
from orchestrator.engine.compiler import compile_workflow
from orchestrator.definitions.spec import parse_workflow

spec = parse_workflow(
    {"name": "W", "nodes": [{"id": "a", "type": "set"}, {"id": "b", "type": "set", "after": ["a"]}]}
)
handed = app.registry.handed_types(node.type for node in spec.nodes)
assert handed == {"set"}, handed
canvas = compile_workflow(app, spec, "run1", handed)
assert canvas.tasks[0].kwargs["hand_on"] is True
"""
    )

    assert node_type_modules(modules) == {"workers.set"}
    assert not modules & set(HEAVY)


def test_checking_a_workflow_imports_the_modules_of_its_own_types_only_and_no_heavy_library() -> None:
    modules = imported_by(
        """
from orchestrator.engine.registry import load_registry
from orchestrator.definitions.spec import parse_workflow

parse_workflow(
    {
        "name": "W",
        "nodes": [
            {"id": "check", "type": "condition", "params": {"if": True}},
            {"id": "data", "type": "market_data", "after": ["check.yes"], "params": {"symbol": "X"}},
        ],
    },
    load_registry(),
)
"""
    )

    # the branches of `condition`, and each node's params checked against its type's model
    assert node_type_modules(modules) == {"workers.condition", "workers.market_data"}
    assert not modules & {"pandas", "numpy", "ta", "telegram", "httpx"}


def test_handed_types_when_given_a_workflows_types_then_answers_for_those_known_only() -> None:
    registry = Registry({"set": "workers.set", "run_workflow": "workers.run_workflow"})

    assert registry.handed_types(["set", "run_workflow", "not_a_type"]) == {"set"}
    assert registry.handed_types() == {"set"}


def test_registry_add_when_a_plugin_takes_a_builtin_name_then_configuration_error() -> None:
    from workers.set import node_type as builtin_set

    registry = Registry({"set": "workers.set"})
    registry.add(builtin_set)  # the built-in itself, re-exported: no clash
    impostor: NodeType[Any] = NodeType(name="set", params=BaseModel, run=_nothing)

    with pytest.raises(ConfigurationError, match="two node types are named 'set'"):
        registry.add(impostor)


def test_a_worker_when_it_starts_then_every_node_type_and_its_libraries_are_imported() -> None:
    modules = imported_by(
        BUILD_APP
        + """
app.WorkController(pool_cls="solo", hostname="test@registry")  # built, never started
"""
    )

    assert node_type_modules(modules) == set(builtin_modules())
    assert set(HEAVY) <= modules


def _nothing(params: BaseModel, context: NodeContext) -> None:
    return None


def test_import_all_when_one_type_fails_then_the_others_are_imported_and_the_failure_is_named() -> None:
    registry = Registry({"set": "workers.set", "gone": "workers.gone"})

    with pytest.raises(ConfigurationError, match=r"node type 'gone': module 'workers.gone' failed to import"):
        registry.import_all()
    assert registry.get("set").name == "set"
