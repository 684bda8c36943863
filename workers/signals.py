"""`signals`: buy, sell or hold per symbol, from strategy rules applied to `indicators` outputs.

Each enabled rule votes buy (+1), sell (-1) or neutral (0), or abstains when its indicator is
missing:

- `rsi`: RSI below `rsi_oversold` buys, above `rsi_overbought` sells.
- `macd_cross`: the MACD line crossing above its signal line (the histogram turning positive)
  buys, crossing below sells.
- `bollinger`: a close below the lower band buys (stretched down), above the upper band sells.
- `ichimoku` (off by default): a close above the cloud buys, below it sells.

The side with more votes wins when it has at least `min_agree` of them; otherwise hold.
Confidence is the winning margin over the rules that voted (`(buy - sell) / voting`), and for
hold the share of voting rules that were neutral. The votes are computed by `rule_votes` on
columns of series, so `backtest` applies exactly the same rules over a whole history.

Input (`indicators`): a list of `indicators` outputs, a mapping symbol → `indicators` output,
or one `indicators` output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError
from workers.indicators import json_number

if TYPE_CHECKING:  # imported where used: checking a workflow imports this module, not them
    import pandas as pd

Rule = Literal["rsi", "macd_cross", "bollinger", "ichimoku"]
DEFAULT_RULES: tuple[Rule, ...] = ("rsi", "macd_cross", "bollinger")
# The columns each rule reads (names of `workers.indicators.indicator_table`).
RULE_COLUMNS: dict[str, tuple[str, ...]] = {
    "rsi": ("rsi",),
    "macd_cross": ("macd_hist", "macd_hist_prev"),
    "bollinger": ("close", "bb_upper", "bb_lower"),
    "ichimoku": ("close", "cloud_top", "cloud_bottom"),
}


class RuleParams(BaseModel):
    """Which rules are enabled and their thresholds (shared with `backtest`)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES), min_length=1)
    rsi_oversold: float = Field(30.0, ge=0, le=100)
    rsi_overbought: float = Field(70.0, ge=0, le=100)
    min_agree: int = Field(1, ge=1, description="votes the winning side needs")

    @model_validator(mode="after")
    def _overbought_above_oversold(self) -> Self:
        if self.rsi_overbought <= self.rsi_oversold:
            raise ValueError(
                f"rsi_overbought ({self.rsi_overbought:g}) must be greater than "
                f"rsi_oversold ({self.rsi_oversold:g})"
            )
        return self


class SignalsParams(RuleParams):
    """The indicator outputs and the rules to apply to them."""

    indicators: list[dict[str, Any]] | dict[str, Any]


def run(params: SignalsParams, context: NodeContext) -> dict[str, Any]:
    """Decide an action per symbol and count them."""
    named = indicator_outputs(params.indicators, context.node_id)
    signals = [signal_for(symbol, output, params) for symbol, output in named]
    counts = {action: sum(s["action"] == action for s in signals) for action in ("buy", "sell", "hold")}
    return {
        "signals": signals,
        "any_signal": counts["buy"] + counts["sell"] > 0,
        "counts": counts,
        "rules": list(params.rules),
    }


def indicator_outputs(value: list[dict[str, Any]] | dict[str, Any], node_id: str) -> list[tuple[str, Any]]:
    """(symbol, indicators output) pairs from a list, a mapping by symbol, or a single output."""
    if isinstance(value, dict) and isinstance(value.get("indicators"), dict):
        value = [value]
    if isinstance(value, dict):
        pairs = [(str(symbol), output) for symbol, output in value.items()]
    else:
        pairs = [(str(output.get("symbol") or f"#{i + 1}"), output) for i, output in enumerate(value)]
    for symbol, output in pairs:
        if not isinstance(output, Mapping) or not isinstance(output.get("indicators"), Mapping):
            raise NodeError(
                f"node '{node_id}' (signals): parameter 'indicators': the entry for '{symbol}' is not an "
                "indicators output (expected an object with 'indicators')"
            )
    if not pairs:
        raise NodeError(f"node '{node_id}' (signals): parameter 'indicators' is empty")
    return pairs


def latest_row(output: Mapping[str, Any]) -> pd.DataFrame:
    """The columns `rule_votes` reads, as a one-row frame, from an `indicators` output."""
    import pandas as pd

    ind = output["indicators"]
    macd, bands, cloud = ind.get("macd") or {}, ind.get("bollinger") or {}, ind.get("ichimoku") or {}
    row = {
        "close": output.get("close"),
        "rsi": (ind.get("rsi") or {}).get("value"),
        "macd_hist": macd.get("histogram"),
        "macd_hist_prev": macd.get("previous_histogram"),
        "bb_upper": bands.get("upper"),
        "bb_lower": bands.get("lower"),
        "cloud_top": cloud.get("cloud_top"),
        "cloud_bottom": cloud.get("cloud_bottom"),
    }
    return pd.DataFrame([row], dtype="float64")


def rule_votes(table: pd.DataFrame, params: RuleParams) -> pd.DataFrame:
    """One column per enabled rule: +1 buy, -1 sell, 0 neutral, NaN where its inputs are missing."""
    import numpy as np
    import pandas as pd

    close = table["close"]
    conditions: dict[str, tuple[pd.Series, pd.Series]] = {
        "rsi": (table["rsi"] < params.rsi_oversold, table["rsi"] > params.rsi_overbought),
        "macd_cross": (
            (table["macd_hist_prev"] <= 0) & (table["macd_hist"] > 0),
            (table["macd_hist_prev"] >= 0) & (table["macd_hist"] < 0),
        ),
        "bollinger": (close < table["bb_lower"], close > table["bb_upper"]),
        "ichimoku": (close > table["cloud_top"], close < table["cloud_bottom"]),
    }
    votes = {}
    for rule in params.rules:
        buy, sell = conditions[rule]
        known = table[list(RULE_COLUMNS[rule])].notna().all(axis=1)
        votes[rule] = pd.Series(np.select([buy, sell], [1.0, -1.0], 0.0), index=table.index).where(known)
    return pd.DataFrame(votes, index=table.index)


def decide(votes: pd.DataFrame, min_agree: int = 1) -> pd.DataFrame:
    """`action` (buy/sell/hold) and `confidence` (0..1) per row of `rule_votes`."""
    import numpy as np
    import pandas as pd

    buy = (votes == 1).sum(axis=1)
    sell = (votes == -1).sum(axis=1)
    voting = votes.notna().sum(axis=1)
    action = np.select(
        [(buy > sell) & (buy >= min_agree), (sell > buy) & (sell >= min_agree)], ["buy", "sell"], "hold"
    )
    share = np.where(action == "hold", voting - buy - sell, (buy - sell).abs()) / voting.where(voting > 0)
    return pd.DataFrame(
        {"action": action, "confidence": pd.Series(share, index=votes.index).fillna(0.0).round(4)},
        index=votes.index,
    )


def signal_for(symbol: str, output: Mapping[str, Any], params: RuleParams) -> dict[str, Any]:
    """The signal of one symbol: action, confidence, and the reason behind each rule's vote."""
    row = latest_row(output)
    votes = rule_votes(row, params)
    decision = decide(votes, params.min_agree).iloc[0]
    values = row.iloc[0]
    reasons = [_reason(rule, votes[rule].iloc[0], values, params) for rule in params.rules]
    return {
        "symbol": symbol,
        "action": str(decision["action"]),
        "confidence": float(decision["confidence"]),
        "reasons": reasons,
        "votes": {rule: _vote_name(votes[rule].iloc[0]) for rule in params.rules},
        "close": json_number(values["close"]),
        "datetime": output.get("datetime"),
    }


def _reason(rule: str, vote: float, v: pd.Series, p: RuleParams) -> str:
    if math.isnan(vote):
        return f"{rule}: no data (the indicator is missing or needs more candles)"
    if rule == "rsi":
        state = "oversold" if vote > 0 else "overbought" if vote < 0 else "neutral"
        return f"RSI {v['rsi']:.1f} ({state}; thresholds {p.rsi_oversold:g}/{p.rsi_overbought:g})"
    if rule == "macd_cross":
        move = (
            "MACD crossed above its signal line"
            if vote > 0
            else "MACD crossed below its signal line"
            if vote < 0
            else "no MACD cross"
        )
        return f"{move} (histogram {v['macd_hist_prev']:.4g} → {v['macd_hist']:.4g})"
    if rule == "bollinger":
        where = "below the lower" if vote > 0 else "above the upper" if vote < 0 else "inside the"
        return f"close {v['close']:.4g} {where} Bollinger band ({v['bb_lower']:.4g} to {v['bb_upper']:.4g})"
    where = "above" if vote > 0 else "below" if vote < 0 else "inside"
    return (
        f"close {v['close']:.4g} {where} the Ichimoku cloud ({v['cloud_bottom']:.4g} to {v['cloud_top']:.4g})"
    )


def _vote_name(vote: float) -> str | None:
    if math.isnan(vote):
        return None
    return "buy" if vote > 0 else "sell" if vote < 0 else "neutral"


node_type = NodeType(
    name="signals",
    params=SignalsParams,
    run=run,
    description="buy/sell/hold per symbol from RSI, MACD-cross and Bollinger rules on indicators",
    imports=("pandas", "numpy"),
)
