"""The tables `bench/scale.py` prints: per unit, growth with N, the fan-out of 500 against
its store floor, and where the bytes go; and the same figures as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from bench import counters
from bench.scale_shapes import (
    FANOUT_N,
    RAW_BESIDE,
    SHAPES,
    TARGET_FANOUT,
    TARGET_GROWTH,
    Cell,
)
from bench.store_floor import ratio_floor


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _row(cell: Cell | None) -> str:
    if cell is None:
        return ""
    if cell.cut_off:
        return f"{cell.shape:7} {cell.cut_off_line()}"
    return (
        f"{cell.shape:7}{_num(cell.per_unit('messages')):>8}{_num(cell.per_unit('message_bytes')):>10}"
        f"{_num(cell.per_unit('ms')):>8}"
    )


def report_table(engine: list[Cell], raw: dict[tuple[str, int], Cell], out: TextIO) -> None:
    """The per-unit table, engine beside raw Celery."""
    print("\nPer unit (node, child or iteration); counts exact, times context.", file=out)
    head = f"{'shape':7}{'N':>7}  {'status':9}{'cmds':>8}{'Mongo B':>10}{'msgs':>7}{'msg B':>10}{'ms':>8}"
    print(f"{head}   | {'raw':7}{'msgs':>8}{'msg B':>10}{'ms':>8}", file=out)
    for cell in engine:
        beside = _row(raw.get((RAW_BESIDE[cell.shape], cell.n)))
        if cell.cut_off:
            print(f"{cell.shape:7}{cell.n:>7}  {cell.cut_off_line():54}   | {beside}", file=out)
            continue
        status = cell.status if cell.settled else f"{cell.status}*"
        print(
            f"{cell.shape:7}{cell.n:>7}  {status:9}{_num(cell.per_unit('mongo_commands')):>8}"
            f"{_num(cell.per_unit('mongo_bytes')):>10}{_num(cell.per_unit('messages')):>7}"
            f"{_num(cell.per_unit('message_bytes')):>10}{_num(cell.per_unit('ms')):>8}   | {beside}",
            file=out,
        )
    notes = [(c, note) for c in engine for note in c.notes if not c.cut_off]
    for cell, note in notes:
        print(f"  note: {cell.shape} N={cell.n}: {note}", file=out)


def series(cells: Sequence[Cell], shape: str, widths: Sequence[int]) -> list[Cell]:
    """The cells of `shape` at the planned widths that finished, by N."""
    return sorted(
        (c for c in cells if c.shape == shape and c.n in widths and c.status == "finished"), key=lambda c: c.n
    )


def growth_rows(engine: list[Cell], raw: list[Cell], widths: Sequence[int]) -> list[dict[str, Any]]:
    """Per shape (and raw chain / group): each per-unit figure at the largest N that finished
    over the same at the smallest."""
    rows = []
    for shape in (*SHAPES, "chain", "group"):
        whole = series((*engine, *raw), shape, widths)
        if len(whole) < 2:
            continue
        small, large = whole[0], whole[-1]
        row: dict[str, Any] = {"shape": shape, "from_n": small.n, "to_n": large.n}
        for name in ("mongo_bytes", "message_bytes", "mongo_commands", "messages"):
            row[name] = large.per_unit(name) / small.per_unit(name) if small.per_unit(name) else None
        both = [c.per_unit("mongo_bytes") + c.per_unit("message_bytes") for c in (small, large)]
        row["bytes"] = both[1] / both[0]
        rows.append(row)
    return rows


def _ratio(value: float | None, target: float | None = None) -> str:
    """`12.34x`, and with a target ` ok` or ` ABOVE` after it."""
    text = f"{'-':>11}" if value is None else f"{value:>10.2f}x"
    if target is None:
        return text
    return text + ("" if value is None else " ok" if value <= target else " ABOVE").ljust(6)


def report_growth(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Bytes per unit at the largest N over the smallest, against the target."""
    if not rows:
        return
    title = (
        f"Growth per unit, largest N vs smallest, runs that finished (target for bytes <= {TARGET_GROWTH}x)"
    )
    print(f"\n{title}:", file=out)
    print(f"{'shape':7}{'N':>12}{'all B':>17}{'Mongo B':>17}{'msg B':>17}{'cmds':>11}{'msgs':>11}", file=out)
    for r in rows:
        figures = [_ratio(r[k], TARGET_GROWTH) for k in ("bytes", "mongo_bytes", "message_bytes")]
        figures += [_ratio(r[k]) for k in ("mongo_commands", "messages")]
        print(f"{r['shape']:7}{r['to_n']:>5} vs {r['from_n']:<3}{''.join(figures)}", file=out)


def fanout_figures(engine: list[Cell], raw: list[Cell]) -> dict[str, Any] | None:
    """The fire-and-forget fan-out of 500 against a raw group of 500, with the store's floor."""
    flow = next((c for c in engine if c.shape == "ff" and c.n == FANOUT_N), None)
    base = next((c for c in raw if c.shape == "group" and c.n == FANOUT_N), None)
    if flow is None or base is None:
        return None
    figures: dict[str, Any] = {"engine_s": flow.wall_s, "raw_s": base.wall_s, "status": flow.status}
    if flow.cut_off or base.cut_off:
        return figures
    store_s = flow.store_s_per_child or 0.0
    figures |= {
        "ratio": flow.wall_s / base.wall_s,
        "target": TARGET_FANOUT,
        "messages": flow.total("messages"),
        "raw_messages": base.total("messages"),
        "message_bytes": flow.total("message_bytes"),
        "raw_message_bytes": base.total("message_bytes"),
        "mongo_commands": flow.total("mongo_commands"),
        "mongo_bytes": flow.total("mongo_bytes"),
        "store_s_per_child": store_s,
        "store_floor_s": store_s * FANOUT_N,
        "ratio_floor": ratio_floor(store_s * FANOUT_N, base.wall_s),
    }
    return figures


def report_fanout(figures: dict[str, Any] | None, out: TextIO) -> None:
    """The 500-child fan-out's lines."""
    if figures is None:
        return
    print(f"\nFan-out of {FANOUT_N} fire-and-forget children vs a raw Celery group of {FANOUT_N}:", file=out)
    if "ratio" not in figures:
        print(f"  {figures['status']}: no ratio", file=out)
        return
    f = figures
    verdict = "ok" if f["ratio"] <= TARGET_FANOUT else "ABOVE TARGET"
    print(f"  wall: engine {f['engine_s']:.2f} s, raw {f['raw_s']:.2f} s: {f['ratio']:.2f}x "
          f"(target <= {TARGET_FANOUT:g}x: {verdict})", file=out)  # fmt: skip
    print(f"  messages {f['messages']:,} vs {f['raw_messages']:,}; body bytes {f['message_bytes']:,} vs "
          f"{f['raw_message_bytes']:,}", file=out)  # fmt: skip
    print(f"  MongoDB: {f['mongo_commands']:,} commands, {f['mongo_bytes']:,} B", file=out)
    per_child = f"{f['store_s_per_child'] * 1000:.2f} ms"
    print(f"  MongoDB's own time per child (its operations one at a time): {per_child}, "
          f"{f['store_floor_s']:.2f} s for all;", file=out)  # fmt: skip
    print(f"  with it alone the ratio cannot go below {f['ratio_floor']:.2f} on this store", file=out)


def by_name(cell: Cell) -> dict[str, tuple[float, float]]:
    """Per unit, for each MongoDB command, each task and each part of a message body: (count, bytes)."""
    found: dict[str, tuple[float, float]] = {}
    pairs = (
        (counters.BY_COMMAND, counters.BYTES_BY_COMMAND, "mongo "),
        (counters.BY_TASK, counters.BYTES_BY_TASK, "msg "),
    )
    for count_prefix, bytes_prefix, label in pairs:
        for key, value in cell.counts.items():
            if key.startswith(count_prefix):
                name = key[len(count_prefix) :]
                found[label + name] = (value / cell.n, cell.counts.get(bytes_prefix + name, 0) / cell.n)
    for part in counters.BODY_PARTS:
        size = cell.counts.get(counters.BODY_PART_BYTES + part, 0)
        found[f"(msg body: {part})"] = (cell.per_unit("messages"), size / cell.n)
    return found


def report_sources(engine: list[Cell], widths: Sequence[int], out: TextIO, top: int = 9) -> None:
    """Where the per-unit cost goes, smallest N against largest, the biggest first."""
    print("\nWhere it goes: per unit, count and bytes, at the smallest and the largest N that finished",
          file=out)  # fmt: skip
    for shape in SHAPES:
        whole = series(engine, shape, widths)
        if not whole:
            continue
        small, large = by_name(whole[0]), by_name(whole[-1])
        print(f"  {shape} (N={whole[0].n} -> N={whole[-1].n}):", file=out)
        names = sorted(set(small) | set(large), key=lambda k: -large.get(k, (0, 0))[1])
        for name in names[:top]:
            (c0, b0), (c1, b1) = small.get(name, (0, 0)), large.get(name, (0, 0))
            print(f"    {name:36}{_num(c0):>8} -> {_num(c1):<8}{_num(b0):>11} -> {_num(b1)} B", file=out)


def report(figures: dict[str, Any], out: TextIO) -> None:
    """Every table."""
    engine, raw = figures["engine"], figures["raw"]
    for key, value in figures["setup"].items():
        print(f"{key}: {value}", file=out)
    report_table(engine, {(c.shape, c.n): c for c in raw}, out)
    report_growth(growth_rows(engine, raw, figures["widths"]), out)
    report_fanout(fanout_figures(engine, raw), out)
    report_sources(engine, figures["widths"], out)


def as_json(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures as JSON-ready data."""
    engine, raw = figures["engine"], figures["raw"]
    return {
        "setup": figures["setup"],
        "cells": [c.as_json() for c in (*raw, *engine)],
        "widths": figures["widths"],
        "growth": growth_rows(engine, raw, figures["widths"]),
        "growth_target": TARGET_GROWTH,
        "fanout500": fanout_figures(engine, raw),
        "fanout500_target": TARGET_FANOUT,
    }
