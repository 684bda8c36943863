"""A run's `results` against the room its document has left (`ORCH_MAX_RUN_DOC_BYTES`).

An explicit `output` that does not fit ends the run as `error`: the user asked for that
value. The default copy of the final nodes' outputs (no `output`) was asked for by no one,
so when it does not fit the run ends as its nodes decide, with `results` null and
`results_omitted` saying why and where the outputs are. Unit checks of the decision, then
real workers whose run documents may take 16 KiB, the smallest budget there is.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from rich.console import Console

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.engine.outcome import Outcome, run_outcome
from orchestrator.settings import Settings
from orchestrator.store.models import Run
from orchestrator.ui.server import ServerThread
from orchestrator.views.display import run_view
from tests.conftest import WorkerProcess, new_run, workflow

BUDGET = 16 * 1024  # the smallest ORCH_MAX_RUN_DOC_BYTES there is
WIDE = 30  # `set` nodes of OUTPUT_CHARS each: ~12 KiB of nodes fit in BUDGET, the ~9 KiB copy does not
OUTPUT_CHARS = 280

# -- the decision ---------------------------------------------------------------------------


def finished_doc(outputs: dict[str, Any]) -> dict[str, Any]:
    """A run document whose nodes all finished with `outputs`."""
    nodes = {node_id: {"status": "finished", "output": out} for node_id, out in outputs.items()}
    return {"_id": "run-1", "workflow": "W", "variables": {}, "nodes": nodes}


BIG = {f"n{i}": {"text": "x" * 1000} for i in range(4)}  # about 4 KiB of final outputs


def test_the_default_copy_that_does_not_fit_is_left_out_and_the_run_finishes_saying_why() -> None:
    outcome = run_outcome(finished_doc(BIG), None, list(BIG), room_bytes=2048)
    assert (outcome.status, outcome.results, outcome.error) == ("finished", None, None)
    note = outcome.results_omitted or ""
    assert note.startswith(
        "the final nodes' outputs (4 KiB) do not fit in the 2 KiB the run document has left"
    )
    assert "ORCH_MAX_RUN_DOC_BYTES" in note
    assert "`orchestrator runs show run-1 --json`" in note and "give the workflow an `output`" in note


def test_an_explicit_output_that_does_not_fit_still_ends_the_run_as_error() -> None:
    outcome = run_outcome(finished_doc(BIG), "{{ nodes.n0.output }}{{ nodes.n1.output }}", list(BIG), 1024)
    assert (outcome.status, outcome.results, outcome.results_omitted) == ("error", None, None)
    assert (outcome.error or "").startswith(
        "the workflow's output is 2 KiB, more than the 1 KiB its run document"
    )


def test_results_that_fit_are_kept_and_a_failed_run_has_no_copy_to_leave_out() -> None:
    assert run_outcome(finished_doc(BIG), None, ["n0"], room_bytes=2048) == Outcome(
        "finished", {"n0": BIG["n0"]}
    )
    assert run_outcome(finished_doc(BIG), None, list(BIG)) == Outcome("finished", BIG)  # no budget given
    failed = finished_doc(BIG)
    failed["nodes"]["n3"] = {"status": "failed", "error": "boom"}
    outcome = run_outcome(failed, None, list(BIG), room_bytes=0)
    assert (outcome.status, outcome.results, outcome.results_omitted) == ("failed", None, None)
    assert outcome.error == "node 'n3' failed: boom"


# -- where it shows -------------------------------------------------------------------------

NOTE = "the final nodes' outputs (9 KiB) do not fit in the 4 KiB the run document has left"


def omitted_run(**fields: Any) -> Run:
    doc = {"_id": "r1", "workflow": "W", "status": "finished", "created_at": datetime.now(UTC)}
    return Run.model_validate(doc | fields)


def test_runs_show_and_json_say_the_results_were_left_out() -> None:
    console = Console(width=400, record=True, color_system=None)
    console.print(run_view(omitted_run(results_omitted=NOTE)))
    assert f"results omitted: {NOTE}" in console.export_text()
    assert omitted_run(results_omitted=NOTE).to_document()["results_omitted"] == NOTE
    console.print(run_view(omitted_run(results={"a": 1})))
    assert 'results: {"a":1}' in console.export_text()
    assert omitted_run().results_omitted is None  # runs of earlier versions have no field


def test_the_web_ui_run_page_and_json_show_the_note(settings: Settings, orch: Orchestrator) -> None:
    run_id = new_run(orch.store, ("a",))
    orch.store.runs.update_one({"_id": run_id}, {"$set": {"status": "finished", "results_omitted": NOTE}})
    plain = new_run(orch.store, ("a",))
    with (
        ServerThread(settings, orchestrator=orch) as server,
        httpx.Client(base_url=server.url, timeout=15) as http,
    ):
        page = html.unescape(http.get(f"/runs/{run_id}").text)
        assert f'<p class="note" data-field="results-omitted">{NOTE}</p>' in page
        assert http.get(f"/api/runs/{run_id}").json()["results_omitted"] == NOTE
        assert 'data-field="results-omitted" hidden>' in http.get(f"/runs/{plain}").text


# -- real workers on a 16 KiB budget --------------------------------------------------------


@pytest.fixture
def small_budget(settings: Settings, spare_redis_url: str, orch: Orchestrator) -> Iterator[Orchestrator]:
    """An orchestrator and its worker whose run documents may take `BUDGET` bytes, on a broker
    of their own. Depends on `orch` so that the suite's store is emptied before the test."""
    own = settings.model_copy(update={"redis_url": spare_redis_url, "max_run_doc_bytes": BUDGET})
    redis.Redis.from_url(spare_redis_url).flushdb()
    with Orchestrator(settings=own) as small:
        env = {"ORCH_MAX_RUN_DOC_BYTES": str(BUDGET)}
        worker = WorkerProcess(own, small, "--pool=prefork", "--concurrency=2", name="budget", env=env)
        worker.wait_ready()
        try:
            yield small
        finally:
            worker.stop()
            redis.Redis.from_url(spare_redis_url).flushdb()


Shape = Callable[[str], dict[str, Any]]


def wide(name: str, **extra: Any) -> dict[str, Any]:
    """`WIDE` independent `set` nodes (all final), each with an output of `OUTPUT_CHARS`."""
    nodes = [{"id": f"n{i:02d}", "type": "set", "params": {"text": "x" * OUTPUT_CHARS}} for i in range(WIDE)]
    return workflow(name, *nodes, **extra)


def one_big(name: str) -> dict[str, Any]:
    """One `set` node whose 9 KiB output fits the document but not twice: its run ends with
    the node (the last-node path), not in a separate step."""
    return workflow(name, {"id": "big", "type": "set", "params": {"text": "x" * 9000}})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", [wide, one_big], ids=["parallel-nodes", "last-node"])
def test_a_run_without_output_whose_copy_does_not_fit_finishes_with_its_nodes_outputs(
    small_budget: Orchestrator, shape: Shape
) -> None:
    name = f"Default Results {shape.__name__}"
    small_budget.register(shape(name))
    run = small_budget.run(name, timeout=60)
    assert (run.status, run.error, run.results) == ("finished", None, None)
    assert all(state.status == "finished" and state.output for state in run.nodes.values())


@pytest.mark.timeout(120)
def test_a_run_with_an_output_that_does_not_fit_still_ends_as_error(small_budget: Orchestrator) -> None:
    everything = {f"n{i:02d}": f"{{{{ nodes.n{i:02d}.output }}}}" for i in range(WIDE)}
    small_budget.register(wide("Explicit Results", output=everything))
    run = small_budget.run("Explicit Results", timeout=60)
    assert (run.status, run.results, run.results_omitted) == ("error", None, None)
    assert (run.error or "").startswith("the workflow's output is 9 KiB, more than the")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", [wide, one_big], ids=["parallel-nodes", "last-node"])
def test_the_note_is_stored_and_shown_by_runs_show_and_json(
    small_budget: Orchestrator, cli: CliRunner, shape: Shape
) -> None:
    name = f"Noted Results {shape.__name__}"
    small_budget.register(shape(name))
    run = small_budget.run(name, timeout=60)
    assert run.status == "finished" and run.results is None
    note = run.results_omitted or ""
    assert note.startswith("the final nodes' outputs (9 KiB) do not fit in the ")
    assert f"`orchestrator runs show {run.id} --json`" in note
    shown = cli.invoke(main, ["runs", "show", run.id], catch_exceptions=False).output
    assert "results omitted: the final nodes' outputs (9 KiB)" in " ".join(shown.split())
    as_json = json.loads(cli.invoke(main, ["runs", "show", run.id, "--json"], catch_exceptions=False).output)
    assert (as_json["results"], as_json["results_omitted"]) == (None, note)
