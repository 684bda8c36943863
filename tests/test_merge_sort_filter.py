"""The `merge` and `sort_filter` nodes: pure functions first, then on a real worker."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator import Orchestrator
from orchestrator.definitions.templating import build_scope
from orchestrator.errors import NodeError
from orchestrator.store.models import Run
from tests.conftest import workflow
from workers.merge import add, concat
from workers.sort_filter import SortFilterParams, keep, lookup, sort_items

# -- merge: pure functions ----------------------------------------------------------------


def test_concat_joins_lists_in_input_order() -> None:
    assert concat({"a": [1, 2], "b": [], "c": [3]}, "m") == [1, 2, 3]


def test_concat_of_a_non_list_names_the_input() -> None:
    with pytest.raises(NodeError, match="input 'b' is an object, not a list"):
        concat({"a": [1], "b": {"x": 1}}, "node 'm' (merge)")


def test_sum_adds_numbers_and_objects_key_by_key() -> None:
    assert add({"a": 1, "b": 2.5}, "m") == 3.5
    assert add({"a": {"x": 1, "n": {"y": 1}}, "b": {"x": 2, "z": 5, "n": {"y": 1}}}, "m") == {
        "x": 3,
        "z": 5,
        "n": {"y": 2},
    }
    assert add({}, "m") is None


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"a": 1, "b": "2"}, "input 'b' is a string, not a number"),
        ({"a": "1"}, "input 'a' is a string, not a number"),
        ({"a": {"x": 1}, "b": {"x": "y"}}, "input 'b' at key 'x' is a string, not a number"),
        ({"a": 1, "b": {"x": 1}}, "input 'b' is an object and cannot be added to a number"),
        ({"a": True}, "input 'a' is a boolean"),
    ],
)
def test_sum_of_what_is_not_a_number_names_the_input(outputs: dict[str, Any], message: str) -> None:
    with pytest.raises(NodeError, match=message):
        add(outputs, "node 'm' (merge)")


# -- sort_filter: pure functions ----------------------------------------------------------


def test_lookup_follows_dotted_paths_through_objects_and_lists() -> None:
    item = {"output": {"sharpe": 1.5, "prices": [3, 4]}}
    assert lookup(item, "output.sharpe") == 1.5
    assert lookup(item, "output.prices.1") == 4
    assert lookup(item, "output.missing") is not None and lookup(item, "output.prices.9") is lookup(item, "x")


def test_sort_puts_items_without_the_key_last_in_either_direction() -> None:
    items = [{"s": 2}, {"x": 1}, {"s": 3}, {"s": None}, {"s": 1}]
    assert sort_items(items, "s", False, "p") == [{"s": 1}, {"s": 2}, {"s": 3}, {"x": 1}, {"s": None}]
    assert sort_items(items, "s", True, "p") == [{"s": 3}, {"s": 2}, {"s": 1}, {"x": 1}, {"s": None}]


def test_sort_of_values_that_cannot_be_compared_names_the_items() -> None:
    with pytest.raises(NodeError, match=r"int at item \[0\], str at item \[1\]"):
        sort_items([{"s": 1}, {"s": "a"}], "s", False, "node 'x' (sort_filter), parameter 'sort_by'")


def test_where_is_evaluated_per_item_with_the_run_scope() -> None:
    scope = build_scope({"floor": 1}, {}, "r", "w")
    items = [{"score": 0}, {"score": 2}, {"score": 5}]
    assert keep(items, "item.score > floor and index < 2", scope, "p") == [{"score": 2}]


def test_where_runs_in_the_sandbox_and_errors_name_the_item() -> None:
    scope = build_scope({}, {}, "r", "w")
    with pytest.raises(NodeError, match=r"parameter 'where', item \[0\]: not allowed in a template"):
        keep([{}], "item.__class__", scope, "node 'x' (sort_filter), parameter 'where'")
    with pytest.raises(NodeError, match=r"item \[1\]: undefined name 'score' in template 'item.score'"):
        keep([{"score": 1}, {}], "item.score", scope, "node 'x' (sort_filter), parameter 'where'")


def test_where_is_one_expression_with_or_without_braces() -> None:
    assert SortFilterParams(items=[], where="{{ item.a > 1 }}").where == "item.a > 1"
    assert SortFilterParams(items=[], where=" item.a > 1 ").where == "item.a > 1"
    with pytest.raises(ValidationError, match="must be one expression"):
        SortFilterParams(items=[], where="item.a > {{ x }}")


# -- on a real worker ---------------------------------------------------------------------


def run(orch: Orchestrator, spec: dict[str, Any], variables: dict[str, Any] | None = None) -> Run:
    orch.register(spec)
    return orch.run(spec["name"], variables, timeout=30)


def both_sides(mode: str, yes: Any, no: Any) -> dict[str, Any]:
    return workflow(
        f"Merge {mode}",
        {"id": "check", "type": "condition", "params": {"if": "{{ go }}"}},
        {"id": "base", "type": "set", "params": {"v": 1}},
        {"id": "left", "type": "set", "after": ["check.yes"], "params": {"v": yes}},
        {"id": "right", "type": "set", "after": ["check.no"], "params": {"v": no}},
        {"id": "merged", "type": "merge", "after": ["base", "left", "right"], "params": {"mode": mode}},
        variables={"go": True},
        output="{{ nodes.merged.output }}",
    )


@pytest.mark.usefixtures("worker")
def test_merge_object_keeps_each_output_and_names_the_skipped_side(orch: Orchestrator) -> None:
    result = run(orch, both_sides("object", 2, 3))
    assert result.status == "finished"
    assert result.results == {
        "result": {"base": {"v": 1}, "left": {"v": 2}},
        "inputs": ["base", "left"],
        "skipped": ["right"],
    }


@pytest.mark.usefixtures("worker")
def test_merge_sum_adds_whichever_side_ran(orch: Orchestrator) -> None:
    result = run(orch, both_sides("sum", 10, 100), {"go": False})
    assert result.status == "finished"
    assert result.results == {"result": {"v": 101}, "inputs": ["base", "right"], "skipped": ["left"]}


@pytest.mark.usefixtures("worker")
def test_merge_concat_joins_lists_in_after_order_from_inputs(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Concat",
            {"id": "a", "type": "python", "params": {"code": "result = [1, 2]"}},
            {"id": "b", "type": "python", "params": {"code": "result = [3]"}},
            {"id": "bad", "type": "set", "params": {"x": 1}},
            {"id": "joined", "type": "merge", "after": ["b", "a"], "params": {"mode": "concat"}},
            {"id": "picked", "type": "merge", "after": ["b", "a"], "params": {"inputs": ["a"]}},
            {"id": "broken", "type": "merge", "after": ["a", "bad"], "params": {"mode": "concat"}},
        ),
    )
    assert result.nodes["joined"].output == {"result": [3, 1, 2], "inputs": ["b", "a"], "skipped": []}
    assert result.nodes["picked"].output == {"result": {"a": [1, 2]}, "inputs": ["a"], "skipped": []}
    assert result.nodes["broken"].status == "failed"
    assert result.nodes["broken"].error == (
        "node 'broken' (merge), mode 'concat': input 'bad' is an object, not a list "
        "(concat joins lists; use mode 'object' to keep any outputs)"
    )


@pytest.mark.usefixtures("worker")
def test_merge_sum_of_strings_fails_naming_the_input(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Sum Strings",
            {"id": "a", "type": "set", "params": {"n": 1}},
            {"id": "b", "type": "set", "params": {"n": "two"}},
            {"id": "total", "type": "merge", "after": ["a", "b"], "params": {"mode": "sum"}},
        ),
    )
    assert result.status == "failed"
    assert "node 'total' (merge), mode 'sum': input 'b' at key 'n' is a string" in (
        result.nodes["total"].error or ""
    )


@pytest.mark.usefixtures("worker")
def test_sort_filter_filters_sorts_and_limits(orch: Orchestrator) -> None:
    strategies = [
        {"name": "a", "output": {"sharpe": 0.5}},
        {"name": "b", "output": {"sharpe": 2.0}},
        {"name": "c", "output": {}},
        {"name": "d", "output": {"sharpe": -1.0}},
        {"name": "e", "output": {"sharpe": 1.2}},
    ]
    result = run(
        orch,
        workflow(
            "Rank",
            {"id": "load", "type": "set", "params": {"strategies": "{{ strategies }}"}},
            {
                "id": "best",
                "type": "sort_filter",
                "after": ["load"],
                "params": {
                    "items": "{{ nodes.load.output.strategies }}",
                    "where": "{{ item.name != excluded and (item.output.sharpe is not defined "
                    "or item.output.sharpe > floor) }}",
                    "sort_by": "output.sharpe",
                    "descending": True,
                    "limit": "{{ top }}",
                },
            },
            variables={"strategies": strategies, "excluded": "e", "floor": 0, "top": 3},
            output="{{ nodes.best.output | map(attribute='name') | list }}",
        ),
    )
    assert result.status == "finished", result.error
    assert result.results == ["b", "a", "c"]


@pytest.mark.usefixtures("worker")
def test_sort_filter_with_a_failing_where_names_node_parameter_and_item(orch: Orchestrator) -> None:
    result = run(
        orch,
        workflow(
            "Bad Where",
            {"id": "pick", "type": "sort_filter", "params": {"items": [1, "x"], "where": "item > 0"}},
        ),
    )
    assert result.status == "failed"
    error = result.nodes["pick"].error or ""
    assert error.startswith("node 'pick' (sort_filter), parameter 'where', item [1]: template 'item > 0'")
    assert "TypeError" in error
