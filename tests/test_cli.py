"""The `orchestrator` command: exit codes 0/1/2, `--json` that is only JSON, readable trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator import Orchestrator
from orchestrator.cli import main, parse_vars

pytestmark = pytest.mark.usefixtures("worker")

GOOD = """
name: Greet
variables: {who: world, times: 1}
nodes:
  - id: hello
    type: set
    params: {text: "hello {{ who }}", times: "{{ times }}"}
output: "{{ nodes.hello.output }}"
"""
FAILING = """
name: Doomed
nodes:
  - {id: boom, type: fail, params: {message: no luck}}
"""
SLOW = """
name: Slow Greet
nodes:
  - {id: nap, type: sleep, params: {seconds: 3}}
"""


def invoke(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name, text in {"good.yaml": GOOD, "failing.yaml": FAILING, "slow.yaml": SLOW}.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_apply_registers_valid_files(cli: CliRunner, files: Path) -> None:
    result = invoke(cli, "workflows", "apply", str(files / "good.yaml"), str(files / "failing.yaml"))
    assert result.exit_code == 0, result.output
    assert "registered 'Greet'" in result.stdout
    listed = json.loads(invoke(cli, "workflows", "list", "--json").stdout)
    assert sorted(w["name"] for w in listed) == ["Doomed", "Greet"]


def test_apply_warns_about_child_workflows_that_are_not_registered(cli: CliRunner, files: Path) -> None:
    (files / "parent.yaml").write_text(
        "name: Parent\nnodes:\n"
        "  - {id: known, type: run_workflow, params: {workflow: Greet}}\n"
        "  - {id: typo, type: run_workflow, params: {workflow: Gret}}\n"
        "  - id: sweep\n    type: parameter_loop\n"
        "    params: {values: [1], body: {type: run_workflow, params: {workflow: Nope}}}\n"
    )
    result = invoke(cli, "workflows", "apply", str(files / "parent.yaml"), str(files / "good.yaml"))
    assert result.exit_code == 0, result.output
    assert "node 'typo': target workflow 'Gret' is not registered" in result.stderr
    assert "node 'sweep': target workflow 'Nope' is not registered" in result.stderr
    assert "'Greet'" not in result.stderr  # registered in the same apply


def test_apply_of_an_invalid_file_exits_2_and_registers_nothing(
    cli: CliRunner, files: Path, orch: Orchestrator
) -> None:
    (files / "bad.yaml").write_text("name: Bad\nnodes:\n  - {id: a, type: set, after: [ghost]}\n")
    result = invoke(cli, "workflows", "apply", str(files / "good.yaml"), str(files / "bad.yaml"))
    assert result.exit_code == 2
    assert (
        "workflow 'Bad'" in result.stderr
        and "node 'a'" in result.stderr
        and "'ghost' names no node" in result.stderr
    )
    assert orch.store.workflow_names() == set()


def test_run_wait_of_a_finishing_run_exits_0_with_the_tree(cli: CliRunner, files: Path) -> None:
    invoke(cli, "workflows", "apply", str(files))
    result = invoke(cli, "run", "Greet", "--var", "who=Ada", "--wait", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert "Greet" in result.stdout and "hello" in result.stdout and "finished" in result.stdout


def test_run_wait_json_prints_only_the_run_document(cli: CliRunner, files: Path) -> None:
    invoke(cli, "workflows", "apply", str(files))
    result = invoke(cli, "run", "Greet", "--var", "times=3", "--vars", '{"who": "Bob"}', "--wait", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["status"] == "finished" and doc["trigger"] == {"type": "cli"}
    assert doc["variables"] == {"who": "Bob", "times": 3}
    assert doc["results"] == {"text": "hello Bob", "times": 3}


def test_run_wait_of_a_failing_run_exits_1(cli: CliRunner, files: Path) -> None:
    invoke(cli, "workflows", "apply", str(files))
    result = invoke(cli, "run", "Doomed", "--wait", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"


def test_run_wait_past_the_timeout_exits_1_and_the_run_goes_on(
    cli: CliRunner, files: Path, orch: Orchestrator
) -> None:
    invoke(cli, "workflows", "apply", str(files))
    result = invoke(cli, "run", "Slow Greet", "--wait", "--timeout", "0.3", "--json")
    assert result.exit_code == 1 and "still" in result.stderr
    run_id = json.loads(result.stdout)["_id"]
    assert orch.wait(run_id, timeout=30).status == "finished"


def test_run_without_wait_prints_the_run_id(cli: CliRunner, files: Path, orch: Orchestrator) -> None:
    invoke(cli, "workflows", "apply", str(files))
    result = invoke(cli, "run", "Greet", "--json")
    assert result.exit_code == 0
    run_id = json.loads(result.stdout)["run_id"]
    assert orch.wait(run_id, timeout=30).status == "finished"


def test_unknown_workflow_exits_2_naming_it(cli: CliRunner) -> None:
    result = invoke(cli, "run", "Nope", "--wait")
    assert result.exit_code == 2 and "no workflow named 'Nope'" in result.stderr


def test_malformed_var_exits_2(cli: CliRunner) -> None:
    result = cli.invoke(main, ["run", "Greet", "--var", "novalue"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_runs_list_and_show(cli: CliRunner, files: Path, orch: Orchestrator) -> None:
    invoke(cli, "workflows", "apply", str(files))
    run = orch.run("Greet", timeout=30)
    listed = json.loads(invoke(cli, "runs", "list", "--workflow", "Greet", "--json").stdout)
    assert [r["_id"] for r in listed] == [run.id]
    assert invoke(cli, "runs", "list", "--status", "failed", "--json").stdout.strip() == "[]"
    shown = json.loads(invoke(cli, "runs", "show", run.id, "--json").stdout)
    assert shown["nodes"]["hello"]["output"] == {"text": "hello world", "times": 1}
    text = invoke(cli, "runs", "show", run.id).stdout
    assert run.id in text and "hello" in text
    assert invoke(cli, "runs", "show", "missing").exit_code == 2


def test_runs_cancel(cli: CliRunner, files: Path, orch: Orchestrator) -> None:
    invoke(cli, "workflows", "apply", str(files))
    run_id = orch.trigger("Slow Greet")
    result = invoke(cli, "runs", "cancel", run_id)
    assert result.exit_code == 0 and "cancelled 1 run" in result.stdout
    assert orch.get_run(run_id).status == "cancelled"


def test_var_values_are_json_when_they_parse() -> None:
    assert parse_vars(("period=14", "name=BTC", "flags=[1,2]", "on=true", "text=a=b"), None) == {
        "period": 14,
        "name": "BTC",
        "flags": [1, 2],
        "on": True,
        "text": "a=b",
    }
