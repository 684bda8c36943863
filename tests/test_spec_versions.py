"""Workflow versions: a run ends as the definition it started with says, however the
workflow is edited meanwhile, and the run's end message carries only the run's id."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.constants import WORKFLOW_VERSIONS
from orchestrator.definitions.spec import parse_workflow
from orchestrator.engine.compiler import compile_workflow
from orchestrator.store.spec_versions import spec_digest
from tests.conftest import wait_for, workflow

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


def parallel(output: str) -> dict[str, object]:
    return workflow(
        "Edited",
        {"id": "nap", "type": "sleep", "params": {"seconds": 1.5}},
        {"id": "quick", "type": "set", "params": {"x": 1}},
        output=output,
    )


def test_a_run_ends_as_the_version_it_started_with_says(orch: Orchestrator) -> None:
    first = orch.register(parallel("{{ 'first version' }}"))
    run_id = orch.trigger("Edited")
    wait_for(lambda: orch.get_run(run_id).nodes["nap"].status == "running", what="the nap to start")
    orch.register(parallel("{{ 'second version' }}"))
    run = orch.wait(run_id, timeout=30)
    assert run.status == "finished" and run.results == "first version"
    assert run.spec_digest == spec_digest(first)
    assert orch.run("Edited", timeout=30).results == "second version"
    assert orch.store.db[WORKFLOW_VERSIONS].count_documents({"name": "Edited"}) == 2


def test_the_end_of_a_fan_out_carries_only_the_run_id(orch: Orchestrator) -> None:
    nodes = [{"id": f"n{i}", "type": "set", "params": {"i": i}} for i in range(50)]
    spec = parse_workflow(workflow("Wide", *nodes))
    canvas = compile_workflow(orch.app, spec, "r1")
    assert canvas.body.kwargs == {"run_id": "r1"}  # the chord's body, copied into all 50 messages


def test_a_runs_graph_is_drawn_from_the_version_it_ran(orch: Orchestrator, cli: CliRunner) -> None:
    orch.register(workflow("Renamed", {"id": "old_step", "type": "set"}))
    run = orch.run("Renamed", timeout=30)
    orch.register(workflow("Renamed", {"id": "new_step", "type": "set"}))
    chart = cli.invoke(main, ["runs", "show", run.id, "--mermaid"], catch_exceptions=False).output
    assert "old_step" in chart and "new_step" not in chart
    assert orch.store.workflow_of_run("Renamed", None) is not None  # no version: as registered now
    assert orch.store.workflow_of_run("Gone", "0" * 24) is None
