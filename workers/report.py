"""`report`: a Markdown daily summary of `signals` (and `indicators`, `backtest`) outputs.

Made to be read in a chat message or an e-mail: a title, one line with the counts, a compact
table (symbol, action, confidence, close and the main indicator values), the reasons behind
each buy or sell, and optionally a table of backtest figures. Output: `{title, markdown,
any_signal, counts}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError


class ReportParams(BaseModel):
    """The outputs to summarise, and the title."""

    model_config = ConfigDict(extra="forbid")

    signals: dict[str, Any] = Field(description="a signals output")
    indicators: list[dict[str, Any]] | dict[str, Any] | None = Field(
        None, description="indicators outputs: a list, a mapping by symbol, or one output"
    )
    backtests: list[dict[str, Any]] | dict[str, Any] | None = Field(
        None, description="backtest outputs: a list, a mapping by symbol, or one output"
    )
    title: str | None = Field(None, max_length=200, description="default: 'Daily market summary: <date>'")
    date: str | None = Field(None, max_length=40, description="default: the latest candle's date")
    details: bool = Field(True, description="list the reasons behind every buy and sell")


def run(params: ReportParams, context: NodeContext) -> dict[str, Any]:
    """Render the summary."""
    signals = params.signals.get("signals")
    if not isinstance(signals, list) or not all(isinstance(s, Mapping) for s in signals):
        raise NodeError(
            f"node '{context.node_id}' (report): parameter 'signals' has no list 'signals' "
            "(expected a signals output)"
        )
    indicators = by_symbol(params.indicators, "indicators")
    backtests = by_symbol(params.backtests, "total_return")
    day = params.date or report_date(signals, indicators.values())
    title = params.title or f"Daily market summary: {day}"
    counts = {a: sum(s.get("action") == a for s in signals) for a in ("buy", "sell", "hold")}
    markdown = render_markdown(title, signals, indicators, backtests, counts, params.details)
    return {
        "title": title,
        "markdown": markdown,
        "any_signal": counts["buy"] + counts["sell"] > 0,
        "counts": counts,
    }


def by_symbol(
    value: list[dict[str, Any]] | dict[str, Any] | None, marker: str
) -> dict[str, Mapping[str, Any]]:
    """Outputs by symbol, from a list (each with `symbol`), a mapping by symbol or one output
    (recognised by its `marker` key)."""
    if value is None:
        return {}
    if isinstance(value, dict) and marker in value:
        value = [value]
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(v, Mapping)}
    return {str(v.get("symbol") or f"#{i + 1}"): v for i, v in enumerate(value)}


def report_date(signals: list[Any], indicators: Iterable[Mapping[str, Any]]) -> str:
    """The date of the latest candle behind the signals, else today's (UTC)."""
    stamps = [str(s.get("datetime")) for s in signals if s.get("datetime")]
    stamps += [str(i.get("datetime")) for i in indicators if i.get("datetime")]
    return max(stamps)[:10] if stamps else datetime.now(UTC).date().isoformat()


def render_markdown(
    title: str,
    signals: list[Any],
    indicators: Mapping[str, Mapping[str, Any]],
    backtests: Mapping[str, Mapping[str, Any]],
    counts: Mapping[str, int],
    details: bool = True,
) -> str:
    """The whole report as Markdown."""
    lines = [f"# {title}", "", _headline(counts, len(signals)), ""]
    lines += _signal_table(signals, indicators)
    movers = [s for s in signals if s.get("action") in ("buy", "sell")]
    if details and movers:
        lines += ["", "## Why"]
        for s in movers:
            lines += ["", f"**{_cell(s.get('symbol'))}**: {s['action']} ({_fmt(s.get('confidence'), '.0%')})"]
            lines += [f"- {_cell(r)}" for r in s.get("reasons") or []]
    if backtests:
        lines += ["", "## Backtests", "", *_backtest_table(backtests)]
    return "\n".join(lines) + "\n"


def _headline(counts: Mapping[str, int], total: int) -> str:
    if counts["buy"] + counts["sell"] == 0:
        return f"No signal today: hold on all {total} symbols."
    return f"{counts['buy']} buy, {counts['sell']} sell, {counts['hold']} hold across {total} symbols."


def _signal_table(signals: list[Any], indicators: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = [
        "| Symbol | Action | Confidence | Close | RSI | MACD hist | Bollinger %B |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for s in signals:
        symbol = str(s.get("symbol"))
        ind = indicators.get(symbol, {})
        values = ind.get("indicators") or {}
        action = str(s.get("action", "hold"))
        rows.append(
            "| "
            + " | ".join(
                [
                    _cell(symbol),
                    f"**{action.upper()}**" if action != "hold" else action,
                    _fmt(s.get("confidence"), ".0%"),
                    _fmt(s.get("close", ind.get("close")), ",.2f"),
                    _fmt((values.get("rsi") or {}).get("value"), ".1f"),
                    _fmt((values.get("macd") or {}).get("histogram"), ".3g"),
                    _fmt((values.get("bollinger") or {}).get("percent_b"), ".2f"),
                ]
            )
            + " |"
        )
    return rows


def _backtest_table(backtests: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = [
        "| Symbol | Return | Buy & hold | Sharpe | Max drawdown | Trades | Win rate |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for symbol, b in backtests.items():
        cells = [
            _cell(symbol),
            _fmt(b.get("total_return"), "+.1%"),
            _fmt(b.get("buy_and_hold_return"), "+.1%"),
            _fmt(b.get("sharpe"), ".2f"),
            _fmt(b.get("max_drawdown"), ".1%"),
            _fmt(b.get("trades"), "d"),
            _fmt(b.get("win_rate"), ".0%"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _fmt(value: Any, spec: str) -> str:
    """A number formatted with `spec`, or an em dash when it is missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return format(value, spec)


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


node_type = NodeType(
    name="report",
    params=ReportParams,
    run=run,
    description="a Markdown daily summary of signals, indicators and backtests",
)
