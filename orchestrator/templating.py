"""`{{ templates }}` in params and outputs: Jinja2 in a sandbox, with native types.

A string that is exactly one `{{ expression }}` keeps the expression's type (number, list,
object); any other string renders as text. Undefined names are errors that say where.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import JsonValue

from orchestrator.errors import TemplateError

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def has_template(value: str) -> bool:
    """Whether a string holds a `{{ }}` or `{% %}` template."""
    return "{{" in value or "{%" in value


def _single_expression(text: str) -> str | None:
    match = _SINGLE_EXPRESSION.match(text)
    if match is None or "{{" in match["expr"] or "}}" in match["expr"]:
        return None
    return match["expr"]


@lru_cache(maxsize=2048)
def _compiled_expression(expr: str) -> Any:
    return _environment().compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=2048)
def _compiled_template(text: str) -> Any:
    return _environment().from_string(text)


def render_string(text: str, scope: Mapping[str, Any]) -> Any:
    """Render one string: a single expression keeps its type, anything else becomes text."""
    if not has_template(text):
        return text
    expr = _single_expression(text)
    if expr is not None:
        value = _compiled_expression(expr)(**scope)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return value
    return _compiled_template(text).render(**scope)


def render(value: JsonValue, scope: Mapping[str, Any], where: str) -> Any:
    """Render every string inside `value` (recursively through lists and objects).

    Args:
        value: the JSON value holding templates.
        scope: the names templates may use.
        where: what is being rendered, for errors (`node 'fetch', parameter 'symbol'`).

    Raises:
        TemplateError: a syntax error, an undefined name or a sandbox violation, saying where.
    """
    return _render(value, scope, where, "")


def _render(value: Any, scope: Mapping[str, Any], where: str, path: str) -> Any:
    if isinstance(value, str):
        try:
            return render_string(value, scope)
        except UndefinedError as exc:
            match = _UNDEFINED_NAME.search(str(exc))
            name = next((g for g in match.groups() if g), str(exc)) if match else str(exc)
            raise TemplateError(f"{where}{path}: undefined name '{name}' in template {value!r}") from exc
        except SecurityError as exc:
            raise TemplateError(f"{where}{path}: not allowed in a template: {exc}") from exc
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{where}{path}: template syntax error: {exc.message}") from exc
        except Exception as exc:  # any error the expression itself raises (1/0, bad types)
            raise TemplateError(
                f"{where}{path}: template {value!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    if isinstance(value, list):
        return [_render(item, scope, where, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: _render(item, scope, where, f"{path}.{key}" if path else f".{key}")
            for key, item in value.items()
        }
    return value


def syntax_errors(value: JsonValue, field: str) -> list[str]:
    """Template syntax errors inside `value`, each as `field 'params.x': message`."""
    problems: list[str] = []
    if isinstance(value, str) and has_template(value):
        try:
            expr = _single_expression(value)
            if expr is not None:
                _compiled_expression(expr)
            else:
                _compiled_template(value)
        except TemplateSyntaxError as exc:
            problems.append(f"field '{field}': template syntax error in {value!r}: {exc.message}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += syntax_errors(item, f"{field}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            problems += syntax_errors(item, f"{field}.{key}")
    return problems


def referenced_nodes(value: JsonValue) -> set[str]:
    """Ids used as `nodes.<id>` in the templates inside `value` (for dependency checks)."""
    found: set[str] = set()
    if isinstance(value, str) and has_template(value):
        try:
            ast = _environment().parse(value)
        except TemplateSyntaxError:
            return found
        for getattr_node in ast.find_all(nodes.Getattr):
            if isinstance(getattr_node.node, nodes.Name) and getattr_node.node.name == "nodes":
                found.add(getattr_node.attr)
    elif isinstance(value, list):
        for item in value:
            found |= referenced_nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            found |= referenced_nodes(item)
    return found


def build_scope(
    variables: Mapping[str, Any], outputs: Mapping[str, Any], run_id: str, workflow: str, **extra: Any
) -> dict[str, Any]:
    """The names a template sees: variables at top level, `nodes.<id>.output`, `run`, extras."""
    scope: dict[str, Any] = dict(variables)
    scope["nodes"] = {node_id: {"output": output} for node_id, output in outputs.items()}
    scope["run"] = {"id": run_id, "workflow": workflow}
    scope.update(extra)
    return scope
