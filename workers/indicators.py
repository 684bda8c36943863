"""`indicators`: RSI, MACD, Bollinger Bands, Ichimoku, SMA and EMA over a symbol's candles.

The candles come as `candles` (a list of `{datetime, open, high, low, close, volume}`) or as
`data` (a `market_data` output); they are cleaned the way `market_data` cleans its own.

MACD, Bollinger Bands, Ichimoku, SMA and EMA come from the `ta` library. RSI is Wilder's
original: the first average gain and loss are simple means over `rsi_period` changes, then
Wilder's smoothing (an exponential average with alpha 1/period), as in the StockCharts
ChartSchool worked example. `ta` seeds that average with the first change instead, which
gives different values for the first hundred or so candles, a difference a short daily
history would show; the smoothing itself is pandas' `ewm`, not a loop.

Output: the latest value of each indicator (with the previous one where a rule needs a cross),
`warnings` for indicators that lack candles (their values are null), and with `series: true`
the whole series, aligned with `datetimes`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError
from workers.market_data import clean_candles, iso_datetimes

if TYPE_CHECKING:  # imported where used: checking a workflow imports this module, not them
    import pandas as pd

IndicatorName = Literal["rsi", "macd", "bollinger", "ichimoku", "sma", "ema"]
ALL_INDICATORS: tuple[IndicatorName, ...] = ("rsi", "macd", "bollinger", "ichimoku", "sma", "ema")


class IndicatorSettings(BaseModel):
    """The periods of each indicator (shared with `backtest`)."""

    model_config = ConfigDict(extra="forbid")

    rsi_period: int = Field(14, ge=2, le=1000)
    macd_fast: int = Field(12, ge=1, le=1000)
    macd_slow: int = Field(26, ge=2, le=1000)
    macd_signal: int = Field(9, ge=1, le=1000)
    bb_period: int = Field(20, ge=2, le=1000)
    bb_std: float = Field(2.0, gt=0, le=10)
    ichimoku_conversion: int = Field(9, ge=1, le=1000)
    ichimoku_base: int = Field(26, ge=1, le=1000)
    ichimoku_span_b: int = Field(52, ge=1, le=1000)
    sma_periods: list[int] = Field(default_factory=lambda: [20, 50], max_length=10)
    ema_periods: list[int] = Field(default_factory=lambda: [12, 26], max_length=10)

    @model_validator(mode="after")
    def _slow_after_fast(self) -> Self:
        if self.macd_slow <= self.macd_fast:
            raise ValueError(
                f"macd_slow ({self.macd_slow}) must be greater than macd_fast ({self.macd_fast})"
            )
        return self

    @field_validator("sma_periods", "ema_periods")
    @classmethod
    def _positive_periods(cls, value: list[int]) -> list[int]:
        if any(p < 1 or p > 1000 for p in value):
            raise ValueError("periods must be between 1 and 1000")
        return value


class CandleSource(BaseModel):
    """Where the candles come from: `candles`, or `data` (a `market_data` output)."""

    model_config = ConfigDict(extra="forbid")

    candles: list[dict[str, Any]] | None = None
    data: dict[str, Any] | None = Field(None, description="a market_data output")
    symbol: str | None = Field(None, description="default: data.symbol")


class IndicatorsParams(CandleSource, IndicatorSettings):
    """Candles, which indicators to compute, their periods, and whether to return whole series."""

    indicators: list[IndicatorName] = Field(default_factory=lambda: list(ALL_INDICATORS), min_length=1)
    series: bool = Field(False, description="also return every indicator's whole series")


def run(params: IndicatorsParams, context: NodeContext) -> dict[str, Any]:
    """Compute the indicators and return their latest values (and series when asked)."""
    candles, symbol, interval = candles_of(params, context.node_id, "indicators")
    table = indicator_table(candles, params)
    return summarize(table, params, symbol, interval, params.indicators, params.series)


def candles_of(
    source: CandleSource, node_id: str, type_name: str
) -> tuple[pd.DataFrame, str | None, str | None]:
    """The cleaned candles of `candles` or `data`, the symbol and the interval; a NodeError
    naming the parameter when neither holds usable candles."""
    import pandas as pd

    where = f"node '{node_id}' ({type_name})"
    if (source.candles is None) == (source.data is None):
        raise NodeError(f"{where}: give exactly one of parameter 'candles' or 'data' (a market_data output)")
    if source.data is not None:
        rows, param = source.data.get("candles"), "data"
        if not isinstance(rows, list):
            raise NodeError(
                f"{where}: parameter 'data' has no list 'candles' (expected a market_data output)"
            )
    else:
        rows, param = source.candles, "candles"
    raw = pd.DataFrame(rows)
    absent = [c for c in ("datetime", "close") if c not in raw.columns]
    if raw.empty or absent:
        detail = "is empty" if raw.empty else f"has candles without {', '.join(absent)}"
        raise NodeError(
            f"{where}: parameter '{param}' {detail} (expected {{datetime, open, high, low, close}})"
        )
    for column in ("open", "high", "low"):  # only the close is required; the others default to it
        if column not in raw.columns:
            raw[column] = raw["close"]
    frame, _ = clean_candles(raw)
    if frame.empty:
        raise NodeError(f"{where}: parameter '{param}' holds no candle with a valid datetime and prices")
    data = source.data or {}
    symbol = source.symbol or _text(data.get("symbol"))
    return frame, symbol, _text(data.get("interval"))


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def wilder_rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's RSI: simple-mean seed over the first `period` changes, then Wilder smoothing.

    Values before the seed are NaN; an average loss of zero gives 100 (50 when prices are flat).
    """
    import numpy as np
    import pandas as pd

    change = close.diff()
    gains = _wilder_average(change.clip(lower=0.0), period)
    losses = _wilder_average((-change).clip(lower=0.0), period)
    rsi = 100.0 - 100.0 / (1.0 + gains / losses)
    flat = np.where(gains > 0, 100.0, 50.0)
    return pd.Series(np.where(losses == 0, flat, rsi), index=close.index).where(gains.notna())


def _wilder_average(values: pd.Series, period: int) -> pd.Series:
    """Wilder's moving average: NaN before `period` values, their mean at the `period`-th, then
    `avg = (prev * (period - 1) + value) / period`, which is `ewm(alpha=1/period, adjust=False)`
    started from the seed."""
    import pandas as pd

    if len(values) <= period:
        return pd.Series(math.nan, index=values.index)
    seeded = values.copy()
    seeded.iloc[: period + 1] = math.nan
    seeded.iloc[period] = values.iloc[1 : period + 1].mean()
    return seeded.ewm(alpha=1.0 / period, adjust=False).mean()


def indicator_table(candles: pd.DataFrame, settings: IndicatorSettings) -> pd.DataFrame:
    """Every indicator's series, one column each, aligned with the candles (NaN until defined)."""
    import numpy as np
    import pandas as pd
    from ta.trend import MACD, EMAIndicator, IchimokuIndicator, SMAIndicator  # type: ignore[import-untyped]
    from ta.volatility import BollingerBands  # type: ignore[import-untyped]

    close, high, low = candles["close"], candles["high"], candles["low"]
    macd = MACD(close, settings.macd_slow, settings.macd_fast, settings.macd_signal)
    bands = BollingerBands(close, settings.bb_period, settings.bb_std)
    cloud = IchimokuIndicator(
        high, low, settings.ichimoku_conversion, settings.ichimoku_base, settings.ichimoku_span_b
    )
    span_b = cloud.ichimoku_b().where(_enough(close, settings.ichimoku_span_b))  # ta fills its start
    span_a = cloud.ichimoku_a()
    shift = settings.ichimoku_base  # the spans are plotted `base` periods ahead
    columns: dict[str, Any] = {
        "datetime": candles["datetime"],
        "close": close,
        "rsi": wilder_rsi(close, settings.rsi_period),
        "macd": macd.macd(),
        "macd_signal": macd.macd_signal(),
        "macd_hist": macd.macd_diff(),
        "bb_upper": bands.bollinger_hband(),
        "bb_middle": bands.bollinger_mavg(),
        "bb_lower": bands.bollinger_lband(),
        "bb_percent_b": bands.bollinger_pband(),
        "bb_bandwidth": bands.bollinger_wband(),
        "ichimoku_conversion": cloud.ichimoku_conversion_line(),
        "ichimoku_base": cloud.ichimoku_base_line(),
        "ichimoku_span_a": span_a,
        "ichimoku_span_b": span_b,
        "cloud_top": np.maximum(span_a, span_b).shift(shift),  # the cloud under today's candle
        "cloud_bottom": np.minimum(span_a, span_b).shift(shift),
    }
    for period in settings.sma_periods:
        columns[f"sma_{period}"] = SMAIndicator(close, period).sma_indicator()
    for period in settings.ema_periods:
        columns[f"ema_{period}"] = EMAIndicator(close, period).ema_indicator()
    table = pd.DataFrame(columns)
    table["macd_hist_prev"] = table["macd_hist"].shift(1)
    return table


def _enough(series: pd.Series, period: int) -> pd.Series:
    """True where at least `period` values lie at or before the position."""
    import numpy as np
    import pandas as pd

    return pd.Series(np.arange(1, len(series) + 1) >= period, index=series.index)


def summarize(
    table: pd.DataFrame,
    settings: IndicatorSettings,
    symbol: str | None,
    interval: str | None,
    names: list[IndicatorName],
    with_series: bool = False,
) -> dict[str, Any]:
    """The node's output: the latest values of `names` from `indicator_table`'s table."""
    import pandas as pd

    last = table.iloc[-1]
    previous = table.iloc[-2] if len(table) > 1 else pd.Series(math.nan, index=table.columns)
    values = {name: _latest(name, last, previous, settings) for name in names}
    needed = _needed(settings)
    warnings = [
        f"{name}: needs at least {needed[name]} candles, got {len(table)}"
        for name in names
        if len(table) < needed[name]
    ]
    output: dict[str, Any] = {
        "symbol": symbol,
        "interval": interval,
        "count": len(table),
        "datetime": iso_datetimes(table["datetime"].iloc[-1:])[0],
        "close": json_number(last["close"]),
        "previous_close": json_number(previous["close"]),
        "indicators": values,
        "warnings": warnings,
    }
    if with_series:
        output["series"] = _series(table, names, settings)
    return output


def _latest(
    name: IndicatorName, last: pd.Series, previous: pd.Series, s: IndicatorSettings
) -> dict[str, Any]:
    if name == "rsi":
        return {
            "period": s.rsi_period,
            "value": json_number(last["rsi"]),
            "previous": json_number(previous["rsi"]),
        }
    if name == "macd":
        return {
            "periods": [s.macd_fast, s.macd_slow, s.macd_signal],
            "macd": json_number(last["macd"]),
            "signal": json_number(last["macd_signal"]),
            "histogram": json_number(last["macd_hist"]),
            "previous_histogram": json_number(last["macd_hist_prev"]),
        }
    if name == "bollinger":
        return {
            "period": s.bb_period,
            "std": s.bb_std,
            **{
                k: json_number(last[f"bb_{k}"])
                for k in ("upper", "middle", "lower", "percent_b", "bandwidth")
            },
        }
    if name == "ichimoku":
        out = {k: json_number(last[f"ichimoku_{k}"]) for k in ("conversion", "base", "span_a", "span_b")}
        top, bottom = json_number(last["cloud_top"]), json_number(last["cloud_bottom"])
        return {
            "periods": [s.ichimoku_conversion, s.ichimoku_base, s.ichimoku_span_b],
            **out,
            "cloud_top": top,
            "cloud_bottom": bottom,
            "price_vs_cloud": _versus_cloud(json_number(last["close"]), top, bottom),
        }
    periods = s.sma_periods if name == "sma" else s.ema_periods
    return {str(p): json_number(last[f"{name}_{p}"]) for p in periods}


def _versus_cloud(close: float | None, top: float | None, bottom: float | None) -> str | None:
    if close is None or top is None or bottom is None:
        return None
    return "above" if close > top else "below" if close < bottom else "inside"


def _needed(s: IndicatorSettings) -> dict[str, int]:
    """How many candles each indicator needs before its latest value is defined."""
    return {
        "rsi": s.rsi_period + 1,
        "macd": s.macd_slow + s.macd_signal - 1,
        "bollinger": s.bb_period,
        "ichimoku": s.ichimoku_span_b + s.ichimoku_base,
        "sma": max(s.sma_periods, default=1),
        "ema": max(s.ema_periods, default=1),
    }


SERIES_COLUMNS: dict[str, tuple[str, ...]] = {
    "rsi": ("rsi",),
    "macd": ("macd", "macd_signal", "macd_hist"),
    "bollinger": ("bb_upper", "bb_middle", "bb_lower"),
    "ichimoku": ("ichimoku_conversion", "ichimoku_base", "ichimoku_span_a", "ichimoku_span_b"),
}


def _series(table: pd.DataFrame, names: list[IndicatorName], s: IndicatorSettings) -> dict[str, Any]:
    columns = ["close"]
    for name in names:
        if name in SERIES_COLUMNS:
            columns += SERIES_COLUMNS[name]
        else:
            columns += [f"{name}_{p}" for p in (s.sma_periods if name == "sma" else s.ema_periods)]
    out: dict[str, Any] = {"datetimes": iso_datetimes(table["datetime"])}
    for column in columns:
        out[column] = table[column].astype(object).where(table[column].notna(), None).tolist()
    return out


def json_number(value: Any) -> float | None:
    """A float, or None for NaN (JSON has no NaN)."""
    number = float(value)
    return None if math.isnan(number) else number


node_type = NodeType(
    name="indicators",
    params=IndicatorsParams,
    run=run,
    description="RSI, MACD, Bollinger Bands, Ichimoku, SMA and EMA of candles",
    imports=("pandas", "numpy", "ta.trend", "ta.volatility"),
)
