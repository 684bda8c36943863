"""The package's layers: sub-packages stacked in one order, and no import cycle between modules.

From the bottom: the base modules (`constants`, `errors`, `settings`, `urls`), `definitions`
(what a workflow is), `store` (MongoDB documents), `engine` (the Celery app and its tasks),
the public API (`orchestrator.api`, `orchestrator.worker_app`), `views` (what is shown),
`services` (processes a machine runs), then the interfaces: the web UI, and the command line,
which starts everything. A module imports only from its own layer or those below.

Every import counts: at the top, inside functions (they run), and under `if TYPE_CHECKING:`
(annotations name the module too). Read from the source with `ast`: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
BASE = ("constants", "errors", "settings", "urls")
LAYERS = ("base", "definitions", "store", "engine", "api", "views", "services", "ui", "cli", "main")


def module_name(source: Path) -> str:
    """`orchestrator.engine.tasks` for `orchestrator/engine/tasks.py` (a package by its name)."""
    parts = source.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer a module of the package belongs to."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("api", "worker_app"):
        return "api"
    if parts[1] in BASE:
        return "base"
    if parts[1] == "__main__":
        return "main"
    return parts[1]


def imported_modules(module: str, names: list[str]) -> set[str]:
    """What `from module import names` imports: the submodules named, else the module."""
    folder = PACKAGE.parent.joinpath(*module.split("."))
    submodules = {f"{module}.{name}" for name in names if (folder / f"{name}.py").is_file()}
    return submodules or {module}


def imports_of(source: Path, typing: bool = True) -> set[str]:
    """The package's modules that `source` imports (with `typing`, for annotations too)."""
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not typing and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("orchestrator"):
                found.update(imported_modules(str(child.module), [alias.name for alias in child.names]))
            walk(child)

    walk(ast.parse(source.read_text()))
    return found - {module_name(source)}


def graph() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports."""
    return {module_name(source): imports_of(source) for source in PACKAGE.rglob("*.py")}


def cycle_from(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        module, path = stack.pop()
        for imported in sorted(edges.get(module, set())):
            if imported == start:
                return [*path, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*path, imported]))
    return None


def test_every_module_is_in_a_known_layer() -> None:
    unknown = {module for module in graph() if layer_of(module) not in LAYERS}
    assert unknown == set(), f"modules outside the layers {LAYERS}: {sorted(unknown)}"


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [
        f"{module} ({layer_of(module)}) imports {imported} ({layer_of(imported)})"
        for module, imported_modules in graph().items()
        for imported in imported_modules
        if rank[layer_of(imported)] > rank[layer_of(module)]
    ]
    assert upward == []


def test_no_module_of_the_package_imports_itself_back_even_for_annotations() -> None:
    edges = graph()
    edges.pop("orchestrator", None)  # the package's lazy re-exports (PEP 562) import nothing up front
    cycles = [cycle for module in sorted(edges) if (cycle := cycle_from(edges, module))]
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", [*BASE, "services/processes", "engine/leases", "engine/broker_scan"])
def test_the_lowest_modules_import_little_of_the_package(module: str) -> None:
    imported = imports_of(PACKAGE / f"{module}.py", typing=False)
    assert {layer_of(m) for m in imported} <= {"base", "store"}, imported
    if module in BASE:
        assert imported == set()
