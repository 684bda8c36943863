"""The daily trading pipeline of examples/workflows/trading, end to end and stage by stage."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.constants import RUN_OVER
from orchestrator.store.models import Run
from orchestrator.store.user_lists import UserLists
from tests.conftest import ROOT, as_dict, output_of, wait_for

pytestmark = pytest.mark.usefixtures("worker")

TRADING = ROOT / "examples" / "workflows" / "trading"
SYMBOLS = ["BTC", "ETH", "SPY", "QQQ"]


@pytest.fixture
def trading(orch: Orchestrator) -> Orchestrator:
    for path in sorted(TRADING.glob("*.yaml")):
        orch.register(path)
    lists = UserLists(orch.store.db)
    lists.clear("paper_orders")
    lists.clear("trading_log")
    return orch


def all_descendants_over(orch: Orchestrator, run_id: str) -> list[Run]:
    def over() -> list[Run] | None:
        runs = list(orch.store.descendants(run_id))
        return runs if all(r.status in RUN_OVER for r in runs) else None

    return wait_for(over, timeout=60, what="every child run to end")


def test_the_pipeline_runs_every_stage_and_reports(trading: Orchestrator) -> None:
    run = trading.run("Daily Trading Pipeline", timeout=120)
    assert run.status == "finished", run.error
    descendants = all_descendants_over(trading, run.id)
    assert {r.status for r in descendants} == {"finished"}
    stages = [c.workflow for c in trading.run_tree(run.id).children]
    results: Any = run.results
    branch = results["branch"]
    follow_up = "Place Orders" if branch == "yes" else "Log No-Trade Day"
    assert stages == [
        "Fetch All Portfolio Data",
        "Compute Technical Indicators",
        "Generate Trading Signals",
        follow_up,
        "Send Daily Report",
    ]
    (report_run,) = [r for r in descendants if r.workflow == "Send Daily Report"]
    report: Any = report_run.results
    markdown = report["markdown"]
    assert all(symbol in markdown for symbol in SYMBOLS)
    assert output_of(report_run, "send")["sent"] is False
    lists = UserLists(trading.store.db)
    if branch == "yes":
        assert lists.count("paper_orders") == sum(results["signals"][a] for a in ("buy", "sell"))
    else:
        assert lists.read("trading_log")[0]["note"] == "no trade signals"


def test_fetch_stage_alone_gives_candles_for_every_symbol(trading: Orchestrator) -> None:
    run = trading.run("Fetch All Portfolio Data", timeout=60)
    results: Any = run.results
    assert [r["symbol"] for r in results] == SYMBOLS
    assert all(len(r["candles"]) == 120 and r["provider"] == "synthetic" for r in results)


def test_indicators_stage_reads_the_candles_of_a_fetch_run(trading: Orchestrator) -> None:
    fetch = trading.run("Fetch All Portfolio Data", {"symbols": ["ETH", "SPY"]}, timeout=60)
    run = trading.run("Compute Technical Indicators", {"data_run": fetch.id}, timeout=60)
    results: Any = run.results
    assert run.status == "finished" and [r["symbol"] for r in results] == ["ETH", "SPY"]
    assert all(0 <= r["indicators"]["rsi"]["value"] <= 100 and not r["warnings"] for r in results), results


@pytest.mark.parametrize(
    ("orders", "expected"),
    [([{"symbol": "BTC", "action": "buy", "confidence": 0.8}], 1), ([], 0)],
)
def test_place_orders_records_paper_orders(trading: Orchestrator, orders: list[Any], expected: int) -> None:
    run = trading.run("Place Orders", {"orders": orders}, timeout=30)
    assert as_dict(run.results)["mode"] == "paper"
    assert UserLists(trading.store.db).count("paper_orders") == expected


def test_the_pipeline_is_scheduled_daily_at_eight_utc(trading: Orchestrator) -> None:
    (spec,) = [w for w in trading.workflows() if w.name == "Daily Trading Pipeline"]
    assert spec.schedule is not None and (spec.schedule.cron, spec.schedule.timezone) == ("0 8 * * *", "UTC")


def test_signals_stage_alone_decides_per_symbol(trading: Orchestrator) -> None:
    fetch = trading.run("Fetch All Portfolio Data", {"symbols": ["BTC", "QQQ"]}, timeout=60)
    indicators = trading.run("Compute Technical Indicators", {"data_run": fetch.id}, timeout=60).results
    run = trading.run("Generate Trading Signals", {"indicators": indicators}, timeout=30)
    results: Any = run.results
    assert [s["symbol"] for s in results["signals"]] == ["BTC", "QQQ"]
    assert {s["action"] for s in results["signals"]} <= {"buy", "sell", "hold"}
    assert results["any_signal"] == (results["counts"]["buy"] + results["counts"]["sell"] > 0)


def test_no_trade_stage_alone_logs_the_day(trading: Orchestrator) -> None:
    trading.run("Log No-Trade Day", {"day": "2024-12-31"}, timeout=30)
    assert UserLists(trading.store.db).read("trading_log") == [
        {"day": "2024-12-31", "note": "no trade signals"}
    ]


def test_report_stage_alone_writes_markdown_and_logs_it_without_a_token(trading: Orchestrator) -> None:
    signals = {
        "signals": [{"symbol": "ETH", "action": "buy", "confidence": 0.5, "reasons": ["RSI 25 (oversold)"]}]
    }
    run = trading.run("Send Daily Report", {"signals": signals, "indicators": []}, timeout=30)
    report: Any = run.results
    assert (
        run.status == "finished"
        and "| ETH |" in report["markdown"]
        and "RSI 25 (oversold)" in report["markdown"]
    )
    assert output_of(run, "send")["sent"] is False
