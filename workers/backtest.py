"""`backtest`: the `signals` rules replayed over a symbol's candles, with fees, and how they did.

The strategy is long-only: it buys at a candle's close when the rules (`workers.signals`, the
same code and params as the `signals` node) decide buy, and sells at the close of a candle
where they decide sell; in between it holds. Each buy and each sell costs `fee` (a fraction of
the traded value). Everything is computed on whole series with pandas and NumPy.

Metrics:

- `total_return`: growth of 1 unit of money over the candles, after fees (0.12 = +12 %).
- `buy_and_hold_return`: the same for holding from the first close to the last, no fees.
- `sharpe`: mean / standard deviation of the per-candle strategy returns * sqrt(candles per
  year), risk-free rate 0. Candles per year: `periods_per_year`, else from the interval on
  a stock-market calendar (252 trading days of 6.5 hours: 252 for 1day, 1638 for 1h, 52 for
  1week, 12 for 1month); for markets open around the clock set it (365 for daily crypto).
  The output states the figure used.
- `max_drawdown`: the deepest fall of the equity curve from a previous peak (0.25 = -25 %).
- `trades`, `win_rate`: round trips, and the share of them with a positive return after
  fees; a position still open at the end counts at the last close (`open: true`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field

from orchestrator.engine.registry import NodeContext, NodeType
from workers.indicators import CandleSource, IndicatorSettings, candles_of, indicator_table
from workers.market_data import INTERVALS, Interval, iso_datetimes
from workers.signals import RuleParams, decide, rule_votes

if TYPE_CHECKING:  # imported where used: checking a workflow imports this module, not them
    import pandas as pd

TRADING_DAYS = 252
TRADING_MINUTES_PER_DAY = 390  # 6.5 hours


class BacktestParams(CandleSource, IndicatorSettings, RuleParams):
    """Candles, the rules and indicator periods (as for `signals` and `indicators`), and costs."""

    fee: float = Field(0.001, ge=0, lt=0.5, description="cost of each buy and each sell, a fraction")
    interval: Interval | None = Field(None, description="default: data.interval, else from the datetimes")
    periods_per_year: float | None = Field(None, gt=0, description="candles per year, for the Sharpe ratio")
    equity_curve: bool = Field(False, description="also return the equity after each candle")


def run(params: BacktestParams, context: NodeContext) -> dict[str, Any]:
    """Replay the rules over the candles and return the performance figures."""
    candles, symbol, data_interval = candles_of(params, context.node_id, "backtest")
    interval = params.interval or data_interval
    per_year = params.periods_per_year or periods_per_year(interval, candles["datetime"])
    result = backtest(candles, params, per_year)
    curve = result.pop("equity")
    output = {
        "symbol": symbol,
        "interval": interval,
        "rules": list(params.rules),
        "fee": params.fee,
        **result,
    }
    output["sharpe_assumption"] = (
        f"per-candle returns annualised with sqrt({per_year:g}) candles per year, risk-free rate 0"
        + ("" if params.periods_per_year else " (stock-market calendar: 252 days of 6.5 h)")
    )
    if params.equity_curve:
        output["equity"] = curve
    return output


def periods_per_year(interval: str | None, datetimes: pd.Series) -> float:
    """Candles per year on a stock-market calendar, from the interval or the datetimes' spacing."""
    import pandas as pd

    if interval in INTERVALS:
        minutes = INTERVALS[interval][1]
    else:
        spacing = pd.Series(datetimes).diff().median()
        minutes = spacing.total_seconds() / 60 if isinstance(spacing, pd.Timedelta) else 1440.0
    if minutes >= 28 * 1440:
        return 12.0
    if minutes >= 7 * 1440:
        return 52.0
    if minutes >= 1440:
        return float(TRADING_DAYS)
    return TRADING_DAYS * TRADING_MINUTES_PER_DAY / max(minutes, 1.0)


def positions(actions: pd.Series) -> pd.Series:
    """1 while holding, 0 while out: in at a buy, out at a sell, unchanged on hold."""
    import numpy as np
    import pandas as pd

    target = np.select([actions == "buy", actions == "sell"], [1.0, 0.0], np.nan)
    return pd.Series(target, index=actions.index).ffill().fillna(0.0)


def backtest(candles: pd.DataFrame, params: BacktestParams, per_year: float) -> dict[str, Any]:
    """The figures of the long-only strategy given by `params`' rules over `candles`."""
    table = indicator_table(candles, params)
    decisions = decide(rule_votes(table, params), params.min_agree)
    return performance(
        table["datetime"], table["close"], positions(decisions["action"]), params.fee, per_year
    )


def performance(
    datetimes: pd.Series, close: pd.Series, position: pd.Series, fee: float, per_year: float
) -> dict[str, Any]:
    """Returns, Sharpe ratio, drawdown and trades of holding `position` (0/1 per candle).

    A position taken at a candle's close earns the next candle's change; a change of position
    costs `fee` at the candle where it happens.
    """
    change = close.pct_change().fillna(0.0)
    held = position.shift(1, fill_value=0.0)
    traded = position.diff().fillna(position).abs()
    returns = held * change - traded * fee
    equity = (1.0 + returns).cumprod()
    drawdown = equity / equity.cummax() - 1.0
    deviation = float(returns.std(ddof=1)) if len(returns) > 2 else 0.0
    sharpe = float(returns.mean()) / deviation * math.sqrt(per_year) if deviation > 0 else None
    trades = trade_log(datetimes, close, position, fee)
    wins = sum(t["return"] > 0 for t in trades)
    return {
        "bars": len(close),
        "first": iso_datetimes(datetimes.iloc[:1])[0],
        "last": iso_datetimes(datetimes.iloc[-1:])[0],
        "total_return": _round(equity.iloc[-1] - 1.0),
        "buy_and_hold_return": _round(close.iloc[-1] / close.iloc[0] - 1.0),
        "sharpe": _round(sharpe),
        "periods_per_year": per_year,
        "max_drawdown": _round(-drawdown.min()),
        "exposure": _round(held.mean()),
        "trades": len(trades),
        "win_rate": _round(wins / len(trades)) if trades else None,
        "trade_log": trades,
        "equity": [_round(v) for v in equity],
    }


def trade_log(
    datetimes: pd.Series, close: pd.Series, position: pd.Series, fee: float
) -> list[dict[str, Any]]:
    """Each round trip: entry and exit datetime and close, return after fees, still open or not."""
    import numpy as np

    change = position.diff().fillna(position).to_numpy()
    entries = np.flatnonzero(change > 0)
    exits = np.flatnonzero(change < 0)
    still_open = len(entries) - len(exits)  # 1 when the last trade is not closed, else 0
    exit_at = np.concatenate([exits, np.full(still_open, len(close) - 1)]).astype(int)
    prices = close.to_numpy()
    is_open = np.arange(len(entries)) >= len(exits)
    net = prices[exit_at] / prices[entries] * (1 - fee) * np.where(is_open, 1.0, 1 - fee) - 1.0
    stamps = iso_datetimes(datetimes)
    return [
        {
            "entry": stamps[i],
            "entry_price": float(prices[i]),
            "exit": stamps[j],
            "exit_price": float(prices[j]),
            "return": _round(r),
            "open": bool(o),
        }
        for i, j, r, o in zip(entries, exit_at, net, is_open, strict=True)
    ]


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


node_type = NodeType(
    name="backtest",
    params=BacktestParams,
    run=run,
    description="long-only backtest of the signals rules over candles: return, Sharpe, drawdown, trades",
    imports=("pandas", "numpy", "ta.trend", "ta.volatility"),
)
