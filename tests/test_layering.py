"""The package's modules form layers: no module imports one that imports it back.

Every import counts: at the top, inside functions (they run), and under `if TYPE_CHECKING:`
(annotations name the module too). Read from the source with `ast`: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"


def imports_of(source: Path, typing: bool = True) -> set[str]:
    """The package's modules that `source` imports (with `typing`, for annotations too)."""
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not typing and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("orchestrator."):
                found.add(str(child.module).split(".")[1])
            walk(child)

    walk(ast.parse(source.read_text()))
    return found - {source.stem}


def cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        module, path = stack.pop()
        for imported in sorted(graph.get(module, set())):
            if imported == start:
                return [*path, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*path, imported]))
    return None


def test_no_module_of_the_package_imports_itself_back_even_for_annotations() -> None:
    graph = {source.stem: imports_of(source) for source in PACKAGE.glob("*.py")}
    cycles = [cycle for module in sorted(graph) if (cycle := cycle_from(graph, module))]
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_lowest_layer_imports_nothing_of_the_package() -> None:
    for module in ("constants", "errors", "settings", "urls", "processes", "leases", "broker_scan"):
        assert imports_of(PACKAGE / f"{module}.py", typing=False) == set(), module
