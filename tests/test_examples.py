"""The example workflows of examples/workflows/patterns, end to end on real workers."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.store.user_lists import UserLists
from tests.conftest import ROOT, as_dict, output_of

pytestmark = pytest.mark.usefixtures("worker")

PATTERNS = ROOT / "examples" / "workflows" / "patterns"


@pytest.fixture
def examples(orch: Orchestrator) -> Orchestrator:
    for path in sorted(PATTERNS.glob("*.yaml")):
        orch.register(path)
    return orch


def child(orch: Orchestrator, run_id: str, node_id: str) -> Any:
    return orch.get_run(run_id).nodes[node_id].output


def test_every_pattern_file_is_a_valid_workflow(examples: Orchestrator) -> None:
    assert len(examples.workflows()) == len(list(PATTERNS.glob("*.yaml")))


def test_sequential_pipeline_passes_each_result_on_then_notifies(examples: Orchestrator) -> None:
    run = examples.run("Sequential Pipeline", timeout=60)
    assert run.status == "finished"
    assert run.results == {"summary": "ETH at 3400.00", "price": 3400.0}
    notify: Any = run.nodes["notify"].output
    assert notify["sent"] is False  # no TELEGRAM_BOT_TOKEN in the suite: written to the log instead
    assert [c.workflow for c in examples.run_tree(run.id).children] == [
        "Fetch Price",
        "Clean Quote",
        "Quote Stats",
    ]


def test_fan_out_starts_three_children_with_their_symbols(examples: Orchestrator) -> None:
    run = examples.run("Fan Out Prices", timeout=60)
    assert {output_of(run, n)["status"] for n in ("btc", "eth", "spy")} == {"triggered"}
    children = [examples.wait(c.id, timeout=30) for c in examples.list_runs(parent=run.id)]
    assert sorted(as_dict(c.results)["symbol"] for c in children) == ["BTC", "ETH", "SPY"]


def test_accumulator_merges_two_waits_then_analyses(examples: Orchestrator) -> None:
    run = examples.run("Portfolio Accumulator", timeout=60)
    assert run.results == {"total": 67400.0, "positions": 2}


def test_error_handling_branches_on_the_failed_child_and_logs_it(examples: Orchestrator) -> None:
    UserLists(examples.store.db).clear("errors")
    run = examples.run("Error Handling", timeout=60)
    assert run.status == "finished"
    assert output_of(run, "fetch")["targetStatus"] == "failed"
    assert (run.nodes["use"].status, run.nodes["log"].status) == ("skipped", "finished")
    (logged,) = UserLists(examples.store.db).read("errors")
    assert logged["source"] == "Unreliable Source" and "quote source unavailable" in logged["error"]


def test_timeout_returns_timeout_and_the_child_finishes_later(examples: Orchestrator) -> None:
    run = examples.run("Timeout Demo", timeout=60)
    after: Any = run.nodes["after"].output
    assert after["waited"] == "timeout"
    late = examples.wait(after["child"], timeout=30)
    assert late.status == "finished" and late.results == "report ready"


def test_nested_variables_reach_the_grandchild(examples: Orchestrator) -> None:
    run = examples.run("Nested Analysis", timeout=60)
    assert run.results == {"period": 14, "symbol": "ETH", "depth": 2}


@pytest.mark.parametrize(
    ("volatility", "taken", "skipped"), [(0.07, "alert", "normal"), (0.01, "normal", "alert")]
)
def test_volatility_router_takes_one_branch(
    examples: Orchestrator, volatility: float, taken: str, skipped: str
) -> None:
    run = examples.run("Volatility Router", {"volatility": volatility}, timeout=60)
    assert (run.nodes[taken].status, run.nodes[skipped].status) == ("finished", "skipped")
    assert run.status == "finished" and as_dict(run.results)["skipped"] == [skipped]


def test_parameter_sweep_ranks_the_backtests(examples: Orchestrator) -> None:
    run = examples.run("Parameter Sweep", timeout=120)
    best: Any = run.results
    assert run.status == "finished" and len(best) == 3, run.results
    sharpes = [b["sharpe"] for b in best]
    assert None not in sharpes, best
    assert sharpes == sorted(sharpes, reverse=True)
    assert {b["period"] for b in best} <= {7, 14, 21, 28}


def test_fire_and_forget_sweep_with_a_collector_gives_the_same_ranking(examples: Orchestrator) -> None:
    waited = examples.run("Parameter Sweep", timeout=120).results
    collected = examples.run("Parameter Sweep Async", timeout=120)
    assert collected.status == "finished" and collected.results == waited
    assert child(examples, collected.id, "collect")["finished"] == 4
