"""Hostile workflow input: every bad file, variable or option is refused with exit 2 (or a
`WorkflowValidationError` from `Orchestrator.register`) and a message naming the file, node and
field; nothing is evaluated at registration, nothing hangs, and nothing is registered."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.definitions.templating import CACHE_SIZE, render
from orchestrator.errors import TemplateError, WorkflowValidationError

pytestmark = pytest.mark.timeout(20)

ALIAS_BOMB = """name: Bomb
variables:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
nodes: [{id: a, type: set}]
"""
VALID = "name: Fine\nnodes: [{id: a, type: set, params: {x: 1}}]\n"


def apply(cli: CliRunner, *paths: Path | str) -> Result:
    return cli.invoke(main, ["workflows", "apply", *map(str, paths)], catch_exceptions=False)


def assert_refused(result: Result, *words: str) -> None:
    """Exit 2, one message with every word, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, f"{word!r} not in {result.stderr!r}"


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def wf(*nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "W", "nodes": list(nodes) or [{"id": "a", "type": "set"}], **extra}


def nested(depth: int) -> list[Any]:
    """`[[[…]]]`, `depth` lists deep (made without recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- templates: parsed at registration, bounded on workers ----------------------------------


@pytest.mark.parametrize("template", ["{{ (9**(9**9)) > 1 }}", "{{ 2**100000 }}", "{{ 'a' * 10**8 }}"])
def test_apply_of_a_template_with_huge_constants_is_quick_then_registers_it(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator, template: str
) -> None:
    path = write(
        tmp_path, "t.yaml", f"name: Folded\nnodes: [{{id: a, type: set, params: {{x: {template!r}}}}}]\n"
    )
    started = time.monotonic()
    result = apply(cli, path)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 5
    assert orch.store.workflow_names() == {"Folded"}


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ (9**(9**9)) > 1 }}", "past 1024 bits"),
        ("{{ 2**100000 }}", "past 1024 bits"),
        ("{{ 'a' * 10**8 }}", "repetition"),
        ("{{ [0] * 10**8 }}", "repetition"),
        ("{{ 'a'|center(10**9) }}", "center's width"),
        ("{{ '%0999999999d' % 1 }}", "a width"),
        ("{{ '{:>999999999}'.format(1) }}", "a width"),
    ],
)
def test_render_of_huge_arithmetic_or_padding_is_refused_naming_node_and_parameter(
    template: str, words: str
) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, {}, "node 'calc', parameter 'x'")
    assert str(info.value).startswith("node 'calc', parameter 'x': not allowed in a template")
    assert words in str(info.value)


def test_render_past_its_deadline_is_a_template_error_naming_node_and_parameter() -> None:
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render({"p": loop}, {}, "node 'spin', parameter 'p'", timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert str(info.value).startswith("node 'spin', parameter 'p'.p: template")
    assert "took longer than 0.5 s to render" in str(info.value)
    assert render("{{ 1 + 1 }}", {}, "here") == 2  # the next render is not hit by the old deadline


def test_renders_in_several_threads_with_short_deadlines_neither_hang_nor_leak() -> None:
    """The deadline strikes from another thread: it must stop only the render it is for, and
    never leave a lock held (a hang) nor an exception to strike later (a leak)."""
    outcomes: list[str] = []

    def renders() -> None:
        for index in range(100):
            try:
                render(
                    {"a": "{% for i in range(20000) %}{% endfor %}x"}, {}, "here", 0.002 + index % 4 * 0.002
                )
                outcomes.append("rendered")
            except TemplateError:
                outcomes.append("timed out")
            except BaseException as exc:  # a stray `_RenderTimeout`
                outcomes.append(type(exc).__name__)
        sum(range(100_000))  # time for a stray exception to strike

    threads = [threading.Thread(target=renders) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == 400 and set(outcomes) <= {"rendered", "timed out"}


def test_render_of_text_past_the_output_limit_is_refused() -> None:
    template = "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"
    with pytest.raises(TemplateError, match="the rendered text passes"):
        render(template, {}, "node 'big', parameter 'text'")


def test_render_of_a_string_doubled_in_a_namespace_is_refused() -> None:
    template = (
        "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    )
    with pytest.raises(TemplateError, match="namespace attribute 's'"):
        render(template, {}, "node 'grow', parameter 'text'")


def test_compiled_templates_are_kept_in_a_bounded_cache() -> None:
    from orchestrator.definitions.templating import _compiled_template

    for index in range(CACHE_SIZE + 50):
        assert render(f"n{{{{ {index} }}}}", {}, "here") == f"n{index}"
    assert CACHE_SIZE == 512 and _compiled_template.cache_info().currsize <= CACHE_SIZE


def test_apply_of_an_unknown_filter_exits_2_naming_node_and_parameter(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "f.yaml", "name: F\nnodes: [{id: a, type: set, params: {x: '{{ 1|nope }}'}}]\n")
    assert_refused(apply(cli, path), str(path), "node 'a'", "params.x", "unknown filter 'nope'")


# -- files: size, kind, encoding, YAML and JSON ---------------------------------------------


def test_apply_of_a_yaml_alias_bomb_exits_2_quickly_and_registers_nothing(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator
) -> None:
    assert_refused(
        apply(cli, write(tmp_path, "bomb.yaml", ALIAS_BOMB)), "bomb.yaml", "more than 1,000,000 values"
    )
    assert orch.workflows() == []


def test_apply_of_yaml_with_too_many_aliases_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    text = "name: Many\nvariables:\n  base: &b 1\n" + "".join(f"  v{i}: *b\n" for i in range(101))
    path = write(tmp_path, "many.yaml", text + "nodes: [{id: a, type: set}]\n")
    assert_refused(apply(cli, path), "many.yaml", "line 104", "more than 100 aliases")


def test_apply_of_a_file_past_the_size_limit_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "big.yaml", "name: Big\nvariables: {x: '" + "a" * (1100 * 1024) + "'}\n")
    assert_refused(apply(cli, path), "big.yaml", "larger than 1024 KiB")


def test_apply_of_dev_zero_exits_2_at_once(cli: CliRunner, orch: Orchestrator) -> None:
    assert_refused(apply(cli, "/dev/zero"), "/dev/zero", "not a regular file")
    assert orch.workflows() == []


def test_apply_of_duplicate_yaml_keys_exits_2_naming_file_line_and_key(
    cli: CliRunner, tmp_path: Path
) -> None:
    text = "name: Dup\nnodes:\n  - id: a\n    type: set\n    params: {x: 1}\n    params: {y: 2}\n"
    assert_refused(
        apply(cli, write(tmp_path, "dup.yaml", text)), "dup.yaml", "line 6", "duplicate key 'params'"
    )


def test_apply_of_duplicate_json_keys_exits_2_naming_the_key(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "dup.json", '{"name": "A", "name": "B", "nodes": [{"id": "a", "type": "set"}]}')
    assert_refused(apply(cli, path), "dup.json", "duplicate key 'name'")


def test_apply_of_a_non_utf8_file_exits_2_naming_the_byte_and_line(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.yaml", "nodes: [{id: a, type: set}]\nname: Caf\xe9\n".encode("latin-1"))
    assert_refused(apply(cli, path), "latin1.yaml", "not UTF-8", "0xe9", "line 2")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "deep.yaml",
            "name: D\nvariables: {x: " + "[" * 1200 + "]" * 1200 + "}\nnodes: [{id: a, type: set}]\n",
        ),
        (
            "deep.json",
            '{"name": "D", "nodes": [{"id": "a", "type": "set"}], "variables": {"x": '
            + "[" * 1200
            + "]" * 1200
            + "}}",
        ),
        (
            "deep_params.json",
            json.dumps(wf({"id": "a", "type": "set", "params": {"x": nested(100)}})),
        ),
    ],
)
def test_apply_of_nesting_past_64_levels_exits_2(
    cli: CliRunner, tmp_path: Path, name: str, text: str
) -> None:
    assert_refused(apply(cli, write(tmp_path, name, text)), name, "nested more than 64 levels deep")


def test_apply_of_a_self_containing_yaml_value_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "loop.yaml", "name: R\nvariables: &a {x: *a}\nnodes: [{id: a, type: set}]\n")
    assert_refused(apply(cli, path), "loop.yaml", "field 'variables.x", "contains itself")


# -- values MongoDB or JSON cannot hold -----------------------------------------------------


def test_apply_of_integers_past_64_bits_exits_2_naming_where(cli: CliRunner, tmp_path: Path) -> None:
    text = (
        "name: B\nvariables: {n: 9223372036854775808}\n"
        "nodes: [{id: a, type: set, params: {m: -9223372036854775809}}]\n"
    )
    assert_refused(
        apply(cli, write(tmp_path, "int.yaml", text)),
        "field 'variables.n'",
        "node 'a', field 'params.m'",
        "does not fit in 64 bits",
    )


def test_apply_of_a_nul_in_a_key_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "nul.yaml", 'name: K\nnodes: [{id: a, type: set, params: {"a\\0b": 1}}]\n')
    assert_refused(apply(cli, path), "node 'a', field 'params'", "NUL")


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("nan.yaml", "name: N\nvariables: {n: .nan}\nnodes: [{id: a, type: set}]\n", "field 'variables.n'"),
        ("inf.yaml", "name: N\nnodes: [{id: a, type: set, params: {x: -.inf}}]\n", "params.x"),
        ("nan.json", '{"name": "N", "variables": {"n": NaN}, "nodes": [{"id": "a", "type": "set"}]}', "NaN"),
        (
            "inf.json",
            '{"name": "N", "variables": {"n": 1e999}, "nodes": [{"id": "a", "type": "set"}]}',
            "inf",
        ),
    ],
)
def test_apply_of_nan_or_infinity_exits_2(
    cli: CliRunner, tmp_path: Path, name: str, text: str, words: str
) -> None:
    assert_refused(apply(cli, write(tmp_path, name, text)), name, words, "not JSON")


def test_register_of_variables_past_the_run_budget_raises_and_stores_nothing(orch: Orchestrator) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        orch.register(wf(variables={"data": "x" * (17 * 1024 * 1024)}))
    assert "field 'variables'" in str(info.value) and "ORCH_MAX_RUN_DOC_BYTES" in str(info.value)
    assert orch.workflows() == []


# -- the graph, ids, names and params -------------------------------------------------------


def test_apply_of_a_1200_node_chain_listed_last_to_first_registers_it(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator
) -> None:
    lines = [
        f"  - {{id: n{i}, type: set{f', after: [n{i - 1}]' if i else ''}}}" for i in reversed(range(1200))
    ]
    result = apply(cli, write(tmp_path, "chain.yaml", "name: Chain\nnodes:\n" + "\n".join(lines) + "\n"))
    assert result.exit_code == 0, result.output
    assert len(orch.store.get_workflow("Chain").nodes) == 1200


def test_a_cycle_through_1200_nodes_is_named_without_recursing(orch: Orchestrator) -> None:
    nodes = [{"id": f"n{i}", "type": "set", "after": [f"n{(i + 1) % 1200}"]} for i in range(1200)]
    with pytest.raises(WorkflowValidationError) as info:
        orch.register(wf(*nodes))
    assert "the nodes form a cycle of 1200 nodes: " in str(info.value)
    assert "(1190 more nodes)" in str(info.value) and len(str(info.value)) < 300


def test_apply_of_a_folder_with_one_valid_and_one_bad_file_registers_nothing_and_names_it(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator
) -> None:
    write(tmp_path, "a_valid.yaml", VALID)
    bad = write(
        tmp_path,
        "b_bad.yaml",
        "name: Bad\nvariables: {n: 99999999999999999999}\nnodes: [{id: a, type: set}]\n",
    )
    assert_refused(apply(cli, tmp_path), str(bad), "variables.n")
    assert orch.workflows() == []


def test_apply_of_params_that_fail_their_model_exits_2_naming_node_and_field(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator
) -> None:
    text = (
        "name: P\nnodes:\n  - {id: nap, type: sleep, params: {secs: 1}}\n"
        "  - {id: child, type: run_workflow, params: {workflow: X, mode: sideways}}\n"
    )
    assert_refused(
        apply(cli, write(tmp_path, "p.yaml", text)),
        "node 'nap': field 'params.secs': Extra inputs are not permitted",
        "node 'nap': field 'params.seconds': Field required",
        "node 'child': field 'params.mode'",
    )
    assert orch.workflows() == []


def test_templated_params_are_checked_for_their_names_only(orch: Orchestrator) -> None:
    orch.register(wf({"id": "nap", "type": "sleep", "params": {"seconds": "{{ pause }}"}}))
    with pytest.raises(WorkflowValidationError, match=r"node 'nap': field 'params\.secs': Extra inputs"):
        orch.register(wf({"id": "nap", "type": "sleep", "params": {"seconds": 1, "secs": "{{ pause }}"}}))


def test_apply_of_a_loop_body_of_an_unknown_type_or_bad_params_exits_2(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator
) -> None:
    text = (
        "name: L\nnodes:\n"
        "  - {id: sweep, type: parameter_loop, params: {values: [1], body: {type: nope}}}\n"
        "  - {id: naps, type: parameter_loop,\n"
        "     params: {values: [1], body: {type: sleep, params: {secs: 1}}}}\n"
    )
    assert_refused(
        apply(cli, write(tmp_path, "l.yaml", text)),
        "node 'sweep': field 'params.body.type': unknown node type 'nope'",
        "node 'naps': field 'params.body.params.secs': Extra inputs are not permitted",
    )
    assert orch.workflows() == []


def test_a_loop_body_with_templated_params_registers(orch: Orchestrator) -> None:
    body = {"type": "sleep", "params": {"seconds": "{{ loop_value }}"}}
    orch.register(wf({"id": "naps", "type": "parameter_loop", "params": {"values": [0], "body": body}}))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"variables": {"Api-Key": "k"}}, "variables.Api-Key"),
        ({"variables": {"db": {"private_key": "k"}}}, "variables.db.private_key"),
        (
            {"schedule": {"cron": "0 8 * * *", "variables": {"authToken": "k"}}},
            "schedule.variables.authToken",
        ),
    ],
)
def test_apply_of_a_workflow_file_with_a_variable_named_like_a_secret_exits_2(
    cli: CliRunner, tmp_path: Path, orch: Orchestrator, extra: dict[str, Any], field: str
) -> None:
    path = write(tmp_path, "s.json", json.dumps(wf(**extra)))
    assert_refused(apply(cli, path), f"field '{field}': looks like a secret", "allow_secret_variables")
    assert orch.workflows() == []
    orch.register(wf(**extra, allow_secret_variables=True))


@pytest.mark.parametrize("node_id", ["a\n", "a\tb", "a\x00", "a\x1b[31m"])
def test_apply_of_a_node_id_with_a_newline_or_control_character_exits_2(
    cli: CliRunner, tmp_path: Path, node_id: str
) -> None:
    path = write(tmp_path, "id.json", json.dumps(wf({"id": node_id, "type": "set"})))
    assert_refused(apply(cli, path), "field 'id': must match [a-z][a-z0-9_]*", repr(node_id)[1:-1])


@pytest.mark.parametrize("name", ["Two\nLines", "Bell\x07", "Right\u202eLeft"])
def test_apply_of_a_workflow_name_with_control_characters_exits_2(
    cli: CliRunner, tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, "name.json", json.dumps({"name": name, "nodes": [{"id": "a", "type": "set"}]}))
    assert_refused(apply(cli, path), "field 'name': holds control characters", "name.json")


# -- `orchestrator run`'s options -----------------------------------------------------------


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_run_with_a_timeout_not_above_zero_or_not_finite_exits_2(timeout: str) -> None:
    result = CliRunner().invoke(main, ["run", "Greet", "--wait", "--timeout", timeout])
    assert result.exit_code == 2 and "--timeout" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--var", "who=caf\udce9"], "not valid UTF-8"),
        (["--var", "n=9223372036854775808"], "does not fit in 64 bits"),
        (["--var", "n=NaN"], "NaN is not JSON"),
        (["--vars", '{"n": Infinity}'], "Infinity is not JSON"),
        (["--vars", json.dumps({"data": "x" * (17 * 1024 * 1024)})], "ORCH_MAX_RUN_DOC_BYTES"),
    ],
)
def test_run_with_variables_a_run_cannot_hold_exits_2(args: list[str], words: str) -> None:
    result = CliRunner().invoke(main, ["run", "Greet", *args])
    assert result.exit_code == 2 and words in result.output, result.output


# -- the API refuses what the command refuses -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (wf(variables={"n": 2**63}), "does not fit in 64 bits"),
        (wf(variables={"n": float("nan")}), "not JSON"),
        (wf(variables={"a\x00b": 1}), "NUL"),
        (wf(variables={"x": nested(1000)}), "nested more than 64 levels"),
        (wf({"id": "a\n", "type": "set"}), "must match"),
        (wf({"id": "nap", "type": "sleep", "params": {"secs": 1}}), "params.secs"),
        ({"name": "A\x00", "nodes": [{"id": "a", "type": "set"}]}, "control characters"),
        (wf({"id": "a", "type": "set", "params": {"x": "{{ x|nope }}"}}), "unknown filter"),
    ],
)
def test_register_raises_workflow_validation_error_for_the_same_inputs(
    orch: Orchestrator, data: dict[str, Any], words: str
) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        orch.register(data)
    assert words in str(info.value)
    assert orch.workflows() == []


def test_register_of_a_bad_file_raises_workflow_validation_error(orch: Orchestrator, tmp_path: Path) -> None:
    for path in (Path("/dev/zero"), write(tmp_path, "bomb.yaml", ALIAS_BOMB), tmp_path):
        with pytest.raises(WorkflowValidationError, match=str(path)):
            orch.register(path)
    assert orch.workflows() == []
