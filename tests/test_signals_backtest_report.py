"""signals, backtest and report: rules on hand-made indicator values, metrics on a hand-worked
example, the Markdown, and the whole daily pipeline on a real worker."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd
import pytest

from orchestrator import Orchestrator
from orchestrator.errors import NodeError
from tests.conftest import as_dict, output_of, workflow
from tests.test_market_data import node_context, settings_with
from workers import backtest, report, signals
from workers.backtest import BacktestParams, performance, periods_per_year, positions
from workers.report import ReportParams
from workers.signals import SignalsParams


def indicator_output(
    close: float,
    rsi: float | None = None,
    hist: tuple[float, float] | None = None,
    bands: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """An `indicators` output with only the values the rules read."""
    values: dict[str, Any] = {}
    if rsi is not None:
        values["rsi"] = {"period": 14, "value": rsi}
    if hist is not None:
        values["macd"] = {"previous_histogram": hist[0], "histogram": hist[1]}
    if bands is not None:
        values["bollinger"] = {"lower": bands[0], "upper": bands[1]}
    return {"close": close, "datetime": "2024-12-31", "indicators": values}


MARKET = {
    "LOW": indicator_output(95, rsi=25, hist=(-0.1, 0.2), bands=(96, 110)),  # all three say buy
    "HOT": indicator_output(105, rsi=80, hist=(0.1, -0.1), bands=(96, 110)),  # two say sell
    "MIXED": indicator_output(111, rsi=25, hist=(0.1, 0.2), bands=(96, 110)),  # buy, neutral, sell
    "NEW": indicator_output(100, rsi=50),  # too young for MACD and bands
}


def decide(**params: Any) -> dict[str, Any]:
    return signals.run(SignalsParams(**params), node_context(settings_with(), "signals"))


def test_signals_apply_each_rule_and_weigh_the_votes() -> None:
    out = decide(indicators=MARKET)
    by_symbol = {s["symbol"]: s for s in out["signals"]}
    assert out["counts"] == {"buy": 1, "sell": 1, "hold": 2} and out["any_signal"] is True
    low = by_symbol["LOW"]
    assert (low["action"], low["confidence"]) == ("buy", 1.0)
    assert low["reasons"] == [
        "RSI 25.0 (oversold; thresholds 30/70)",
        "MACD crossed above its signal line (histogram -0.1 → 0.2)",
        "close 95 below the lower Bollinger band (96 to 110)",
    ]
    assert (by_symbol["HOT"]["action"], by_symbol["HOT"]["confidence"]) == (
        "sell",
        pytest.approx(2 / 3, abs=1e-4),
    )
    assert (by_symbol["MIXED"]["action"], by_symbol["MIXED"]["confidence"]) == (
        "hold",
        pytest.approx(1 / 3, abs=1e-4),
    )
    new = by_symbol["NEW"]
    assert (new["action"], new["confidence"]) == ("hold", 1.0)
    assert new["votes"] == {"rsi": "neutral", "macd_cross": None, "bollinger": None}
    assert new["reasons"][1].startswith("macd_cross: no data")


def test_signals_honour_enabled_rules_thresholds_and_min_agree() -> None:
    only_rsi = decide(indicators=list(MARKET.values()), rules=["rsi"], rsi_oversold=20, rsi_overbought=75)
    assert [s["action"] for s in only_rsi["signals"]] == ["hold", "sell", "hold", "hold"]
    assert [s["symbol"] for s in only_rsi["signals"]] == ["#1", "#2", "#3", "#4"]  # a list without symbols
    strict = decide(indicators=MARKET, min_agree=3)
    assert [s["action"] for s in strict["signals"]] == ["buy", "hold", "hold", "hold"]
    single = decide(indicators={**MARKET["LOW"], "symbol": "LOW"})  # one indicators output
    assert single["signals"][0]["symbol"] == "LOW" and single["counts"]["buy"] == 1


def test_signals_reject_what_is_not_an_indicators_output() -> None:
    with pytest.raises(
        NodeError, match="parameter 'indicators': the entry for 'X' is not an indicators output"
    ):
        decide(indicators={"X": {"close": 1}})
    with pytest.raises(ValueError, match=r"rsi_overbought \(30\) must be greater than rsi_oversold \(70\)"):
        SignalsParams(indicators=[], rsi_oversold=70, rsi_overbought=30)


def test_backtest_metrics_on_a_hand_worked_example() -> None:
    dates = pd.Series(pd.date_range("2024-01-01", periods=5, freq="D"))
    close = pd.Series([100.0, 110.0, 99.0, 120.0, 120.0])
    position = pd.Series([1.0, 1.0, 0.0, 0.0, 1.0])  # in, hold, out, wait, in again
    out = performance(dates, close, position, fee=0.01, per_year=252)
    returns = [-0.01, 0.10, -0.11, 0.0, -0.01]  # fee on the day of each trade, the move of held days
    equity = [0.99, 0.99 * 1.1, 0.99 * 1.1 * 0.89, 0.99 * 1.1 * 0.89, 0.99 * 1.1 * 0.89 * 0.99]
    assert out["total_return"] == pytest.approx(equity[-1] - 1, abs=1e-6)
    assert out["max_drawdown"] == pytest.approx(1 - equity[-1] / equity[1], abs=1e-6)
    sharpe = statistics.fmean(returns) / statistics.stdev(returns) * math.sqrt(252)
    assert out["sharpe"] == pytest.approx(sharpe, abs=1e-5)
    assert out["buy_and_hold_return"] == pytest.approx(0.2) and out["exposure"] == pytest.approx(0.4)
    assert out["trades"] == 2 and out["win_rate"] == 0.0
    assert out["trade_log"] == [
        {"entry": "2024-01-01", "entry_price": 100.0, "exit": "2024-01-03", "exit_price": 99.0,
         "return": pytest.approx(0.99 * 0.99 * 0.99 - 1, abs=1e-6), "open": False},
        {"entry": "2024-01-05", "entry_price": 120.0, "exit": "2024-01-05", "exit_price": 120.0,
         "return": pytest.approx(-0.01), "open": True},
    ]  # fmt: skip


def test_positions_and_periods_per_year() -> None:
    actions = pd.Series(["hold", "buy", "hold", "sell", "hold", "buy", "buy"])
    assert positions(actions).tolist() == [0, 1, 1, 0, 0, 1, 1]
    hourly = pd.Series(pd.date_range("2024-01-01", periods=10, freq="h"))
    assert periods_per_year("1day", hourly) == 252 and periods_per_year(None, hourly) == 1638
    assert periods_per_year("1week", hourly) == 52 and periods_per_year("1month", hourly) == 12


def test_backtest_node_is_reproducible_and_states_its_sharpe_assumption() -> None:
    from workers.market_data import candle_records, clean_candles, synthetic_candles

    frame = synthetic_candles("ACME", "1day", 300, 3, pd.Timestamp("2024-12-31").to_pydatetime())
    candles = candle_records(clean_candles(frame)[0])
    context = node_context(settings_with(), "bt")
    first = backtest.run(BacktestParams(candles=candles, symbol="ACME", fee=0.002), context)
    assert first == backtest.run(BacktestParams(candles=candles, symbol="ACME", fee=0.002), context)
    assert first["trades"] == len(first["trade_log"]) > 0 and 0 <= first["win_rate"] <= 1
    assert first["sharpe_assumption"].startswith("per-candle returns annualised with sqrt(252)")
    assert first["bars"] == 300 and first["first"] < first["last"] == "2024-12-31" and "equity" not in first


def test_report_renders_table_reasons_and_backtests() -> None:
    decided = decide(indicators={**MARKET, "A|B": indicator_output(100, rsi=50)})
    indicators = {
        "LOW": {**MARKET["LOW"], "indicators": {**MARKET["LOW"]["indicators"], "rsi": {"value": 25.04}}}
    }
    backtests = [{"symbol": "LOW", "total_return": 0.1234, "buy_and_hold_return": -0.05, "sharpe": 1.234,
                  "max_drawdown": 0.2, "trades": 4, "win_rate": 0.75}]  # fmt: skip
    out = report.run(
        ReportParams(signals=decided, indicators=indicators, backtests=backtests),
        node_context(settings_with(), "report"),
    )
    md = out["markdown"]
    assert out["title"] == "Daily market summary: 2024-12-31" and md.startswith(
        "# Daily market summary: 2024-12-31\n"
    )
    assert "1 buy, 1 sell, 3 hold across 5 symbols." in md
    assert "| Symbol | Action | Confidence | Close | RSI | MACD hist | Bollinger %B |" in md
    assert "| LOW | **BUY** | 100% | 95.00 | 25.0 | 0.2 | — |" in md
    assert "| A\\|B | hold |" in md
    assert "**HOT**: sell (67%)\n- RSI 80.0 (overbought; thresholds 30/70)" in md
    assert "| LOW | +12.3% | -5.0% | 1.23 | 20.0% | 4 | 75% |" in md
    quiet = report.run(
        ReportParams(signals=decide(indicators={"NEW": MARKET["NEW"]}), title="Morning"),
        node_context(settings_with(), "report"),
    )
    assert quiet["markdown"].startswith("# Morning\n\nNo signal today: hold on all 1 symbols.")
    assert quiet["any_signal"] is False


@pytest.mark.usefixtures("worker")
def test_worker_runs_the_daily_pipeline(orch: Orchestrator) -> None:
    def fetch(symbol: str) -> dict[str, Any]:
        params = {"symbol": symbol, "provider": "synthetic", "limit": 150, "seed": "{{ seed }}"}
        return {"id": f"fetch_{symbol.lower()}", "type": "market_data", "params": params}

    def indicators(symbol: str) -> dict[str, Any]:
        fetched = f"fetch_{symbol.lower()}"
        return {
            "id": f"ind_{symbol.lower()}",
            "type": "indicators",
            "after": [fetched],
            "params": {"data": f"{{{{ nodes.{fetched}.output }}}}"},
        }

    spec = workflow(
        "Daily Pipeline",
        fetch("AAA"),
        fetch("BBB"),
        indicators("AAA"),
        indicators("BBB"),
        {
            "id": "decide",
            "type": "signals",
            "after": ["ind_aaa", "ind_bbb"],
            "params": {"indicators": ["{{ nodes.ind_aaa.output }}", "{{ nodes.ind_bbb.output }}"]},
        },
        {
            "id": "bt",
            "type": "backtest",
            "after": ["fetch_aaa"],
            "params": {"data": "{{ nodes.fetch_aaa.output }}"},
        },
        {
            "id": "summary",
            "type": "report",
            "after": ["decide", "bt"],
            "params": {
                "signals": "{{ nodes.decide.output }}",
                "indicators": ["{{ nodes.ind_aaa.output }}", "{{ nodes.ind_bbb.output }}"],
                "backtests": ["{{ nodes.bt.output }}"],
            },
        },
        variables={"seed": 11},
        output="{{ nodes.summary.output }}",
    )
    orch.register(spec)
    run = orch.run("Daily Pipeline", timeout=90)
    assert run.status == "finished", run.error
    decided = output_of(run, "decide")
    assert [s["symbol"] for s in decided["signals"]] == ["AAA", "BBB"]
    assert all(
        s["action"] in ("buy", "sell", "hold") and 0 <= s["confidence"] <= 1 for s in decided["signals"]
    )
    bt = output_of(run, "bt")
    assert bt["symbol"] == "AAA" and bt["interval"] == "1day" and bt["bars"] == 150
    assert isinstance(bt["total_return"], float) and bt["max_drawdown"] >= 0
    md = as_dict(run.results)["markdown"]
    assert as_dict(run.results)["title"] == "Daily market summary: 2024-12-31"
    assert "| AAA |" in md and "| BBB |" in md and "## Backtests" in md
