"""Templates keep native types for single expressions, render text otherwise, and fail clearly."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import JsonValue

from orchestrator.definitions.templating import build_scope, referenced_nodes, render
from orchestrator.errors import TemplateError

VARIABLES: dict[str, Any] = {
    "symbol": "BTCUSD",
    "limit": 500,
    "ratio": 0.25,
    "symbols": ["BTC", "ETH"],
    "config": {"period": 14, "bands": [2, 3]},
    "analysis": {"period": 21, "params": {"fast": 12}},
}
SCOPE = build_scope(VARIABLES, {"fetch": [1, 2, 3]}, "run1", "Fetch Data")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ symbol }}", "BTCUSD"),
        ("{{ limit }}", 500),
        ("{{ ratio }}", 0.25),
        ("{{ symbols }}", ["BTC", "ETH"]),
        ("{{ config }}", {"period": 14, "bands": [2, 3]}),
        ("{{ analysis.period }}", 21),
        ("{{ analysis.params.fast }}", 12),
        ("{{ config.bands[1] }}", 3),
        ("{{ nodes.fetch.output | length > 0 }}", True),
        ("{{ run.id }}", "run1"),
        ("  {{ limit * 2 }}  ", 1000),
    ],
)
def test_single_expression_keeps_its_type(template: str, expected: Any) -> None:
    assert render(template, SCOPE, "here") == expected


def test_mixed_text_renders_as_a_string() -> None:
    assert render("{{ symbol }} x{{ limit }}", SCOPE, "here") == "BTCUSD x500"
    assert render("{{ limit }}{{ limit }}", SCOPE, "here") == "500500"


def test_templates_inside_lists_and_objects_are_rendered() -> None:
    value: JsonValue = {"a": ["{{ symbol }}", {"b": "{{ analysis.period }}"}], "c": 3}
    assert render(value, SCOPE, "here") == {"a": ["BTCUSD", {"b": 21}], "c": 3}


def test_undefined_name_error_names_node_parameter_and_name() -> None:
    with pytest.raises(TemplateError) as info:
        render("{{ timeframe }}", SCOPE, "node 'fetch', parameter 'interval'")
    assert str(info.value).startswith("node 'fetch', parameter 'interval'")
    assert "'timeframe'" in str(info.value)


def test_undefined_node_output_is_an_error() -> None:
    with pytest.raises(TemplateError, match="undefined name 'missing'"):
        render("{{ nodes.missing.output }}", SCOPE, "node 'x', parameter 'y'")


def test_nested_path_is_part_of_the_message() -> None:
    with pytest.raises(TemplateError, match=r"parameter 'variables'\.child\[1\]"):
        render({"child": ["ok", "{{ nope }}"]}, SCOPE, "node 'x', parameter 'variables'")


@pytest.mark.parametrize(
    "template", ["{{ config.__class__ }}", "{{ symbol.__class__.__mro__ }}", "{{ config.update({'a': 1}) }}"]
)
def test_sandbox_refuses_python_internals(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, SCOPE, "here")


def test_errors_raised_by_the_expression_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ limit / 0 }}", SCOPE, "here")


def test_referenced_nodes_are_found() -> None:
    assert referenced_nodes({"a": "{{ nodes.fetch.output }} {{ nodes.calc.output.x }}", "b": "plain"}) == {
        "fetch",
        "calc",
    }
