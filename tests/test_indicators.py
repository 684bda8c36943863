"""indicators: values against published references, shapes, warnings, errors, and on a worker.

References (tests/data, each file says where it comes from): Wilder's RSI(14) worked example
of StockCharts ChartSchool, and the MACD(12, 26, 9) test series of the `ta` library. Bollinger
Bands, SMA and Ichimoku lines are checked against their definitions computed with `statistics`.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orchestrator import Orchestrator
from orchestrator.errors import NodeError
from tests.conftest import as_dict, workflow
from tests.test_market_data import node_context, settings_with
from workers import indicators
from workers.indicators import IndicatorsParams, wilder_rsi

DATA = Path(__file__).parent / "data"


def reference(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, comment="#")


def candles_from(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Candles whose high, low and open are the close (the references give closes only)."""
    return [
        {"datetime": d, "open": c, "high": c, "low": c, "close": c, "volume": 0}
        for d, c in zip(frame["date"], frame["close"], strict=True)
    ]


def compute(**params: Any) -> dict[str, Any]:
    return indicators.run(IndicatorsParams(**params), node_context(settings_with(), "ind"))


def test_rsi_matches_stockcharts_wilder_example() -> None:
    ref = reference("stockcharts_rsi14.csv")
    rsi = wilder_rsi(ref["close"], 14)
    assert rsi.iloc[:14].isna().all()
    assert (rsi.round(2) - ref["rsi"]).abs().max() == pytest.approx(0.0, abs=1e-9)

    out = compute(candles=candles_from(ref), indicators=["rsi"], series=True)
    assert out["indicators"]["rsi"] == {
        "period": 14,
        "value": pytest.approx(37.77, abs=0.005),
        "previous": pytest.approx(33.08, abs=0.005),
    }
    assert out["series"]["rsi"][:14] == [None] * 14 and out["datetime"] == "2010-02-01"


def test_macd_matches_ta_reference_series() -> None:
    ref = reference("ta_macd_12_26_9.csv")
    out = compute(candles=candles_from(ref), indicators=["macd"], series=True)
    series = pd.DataFrame(out["series"], dtype="float64", columns=["macd", "macd_signal", "macd_hist"])
    defined = series["macd"].notna()
    assert defined.sum() == len(ref) - 25  # the slow EMA needs 26 closes
    assert (series["macd"][defined] - ref["macd"][defined]).abs().max() < 1e-8
    late = slice(len(ref) - 40, None)  # the reference's signal line starts earlier: compare once it faded
    assert (series["macd_signal"][late] - ref["signal"][late]).abs().max() < 1e-4
    assert (series["macd_hist"][late] - ref["histogram"][late]).abs().max() < 1e-4
    last = out["indicators"]["macd"]
    assert last["macd"] == pytest.approx(0.9956504772, abs=1e-8) and last["periods"] == [12, 26, 9]
    assert last["previous_histogram"] == pytest.approx(0.07194029512, abs=1e-4)


def test_bollinger_sma_ema_and_ichimoku_follow_their_definitions() -> None:
    ref = reference("ta_macd_12_26_9.csv")
    closes = list(ref["close"])
    out = compute(candles=candles_from(ref), sma_periods=[10], ema_periods=[5])["indicators"]
    mean, sd = statistics.fmean(closes[-20:]), statistics.pstdev(closes[-20:])
    bands = out["bollinger"]
    assert bands["middle"] == pytest.approx(mean) and bands["upper"] == pytest.approx(mean + 2 * sd)
    assert bands["lower"] == pytest.approx(mean - 2 * sd)
    assert bands["percent_b"] == pytest.approx((closes[-1] - bands["lower"]) / (4 * sd))
    assert out["sma"] == {"10": pytest.approx(statistics.fmean(closes[-10:]))}
    assert out["ema"]["5"] == pytest.approx(ref["close"].ewm(span=5, adjust=False).mean().iloc[-1])
    cloud = out["ichimoku"]
    assert cloud["conversion"] == pytest.approx((max(closes[-9:]) + min(closes[-9:])) / 2)
    assert cloud["base"] == pytest.approx((max(closes[-26:]) + min(closes[-26:])) / 2)
    assert cloud["span_b"] == pytest.approx((max(closes[-52:]) + min(closes[-52:])) / 2)
    then = closes[:-26]  # the cloud under today's candle was computed 26 candles ago
    span_a = ((max(then[-9:]) + min(then[-9:])) / 2 + (max(then[-26:]) + min(then[-26:])) / 2) / 2
    span_b = (max(then[-52:]) + min(then[-52:])) / 2
    assert cloud["cloud_top"] == pytest.approx(max(span_a, span_b))
    assert cloud["price_vs_cloud"] == "above"


def test_too_few_candles_give_nulls_and_warnings_not_errors() -> None:
    ref = reference("stockcharts_rsi14.csv").head(20)
    out = compute(candles=candles_from(ref))
    assert out["indicators"]["rsi"]["value"] is not None
    assert (
        out["indicators"]["macd"]["macd"] is None and out["indicators"]["ichimoku"]["price_vs_cloud"] is None
    )
    assert "macd: needs at least 34 candles, got 20" in out["warnings"]
    assert "ichimoku: needs at least 78 candles, got 20" in out["warnings"]


def test_missing_or_bad_candles_fail_naming_the_param() -> None:
    with pytest.raises(
        NodeError, match="node 'ind' \\(indicators\\): give exactly one of parameter 'candles' or 'data'"
    ):
        compute()
    with pytest.raises(NodeError, match="parameter 'data' has no list 'candles'"):
        compute(data={"symbol": "X"})
    with pytest.raises(NodeError, match="parameter 'candles' has candles without close"):
        compute(candles=[{"datetime": "2024-01-01", "open": 1}])
    with pytest.raises(ValueError, match=r"macd_slow \(12\) must be greater than macd_fast \(26\)"):
        IndicatorsParams(candles=[], macd_fast=26, macd_slow=12)


@pytest.mark.usefixtures("worker")
def test_worker_computes_indicators_from_market_data(orch: Orchestrator) -> None:
    spec = workflow(
        "Indicators",
        {
            "id": "fetch",
            "type": "market_data",
            "params": {"symbol": "ACME", "provider": "synthetic", "limit": 120},
        },
        {
            "id": "ind",
            "type": "indicators",
            "after": ["fetch"],
            "params": {
                "data": "{{ nodes.fetch.output }}",
                "rsi_period": "{{ period }}",
                "sma_periods": [5, 20],
            },
        },
        variables={"period": 10},
        output="{{ nodes.ind.output }}",
    )
    orch.register(spec)
    run = orch.run("Indicators", timeout=60)
    assert run.status == "finished", run.error
    out = as_dict(run.results)
    assert out["symbol"] == "ACME" and out["interval"] == "1day" and out["count"] == 120
    assert out["datetime"] == "2024-12-31" and out["warnings"] == []
    assert set(out["indicators"]) == {"rsi", "macd", "bollinger", "ichimoku", "sma", "ema"}
    assert out["indicators"]["rsi"]["period"] == 10 and 0 <= out["indicators"]["rsi"]["value"] <= 100
    assert set(out["indicators"]["sma"]) == {"5", "20"}
