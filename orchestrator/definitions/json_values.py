"""JSON values a run or a workflow may hold: what JSON and MongoDB both accept, checked
without recursion, and JSON read strictly.

MongoDB stores 64-bit integers only, JSON has no NaN nor Infinity, keys may hold no NUL, text
must be UTF-8; nesting and size are bounded so that no input makes a check recurse or run
long (a YAML alias bomb is refused after `MAX_VALUES` steps, not expanded).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

MAX_DEPTH = 64
"""How deeply lists and objects may nest in a workflow (the document itself is level 1)."""
MAX_VALUES = 1_000_000
"""The most values a workflow may hold, aliases expanded (a YAML alias bomb stops here)."""
INT64 = (-(2**63), 2**63 - 1)
"""The integers MongoDB stores."""


class Refused(ValueError):
    """A document refused while it is parsed; the message says where and why."""


def show(text: Any, limit: int = 80) -> str:
    """A name or id for a message, in quotes: as written when printable, else escaped (a
    newline in an id must not start a new line of the message), cut at `limit` characters."""
    text = str(text)
    shown = text if text.isprintable() else repr(text)[1:-1]
    return f"'{shown[:limit]}…'" if len(shown) > limit else f"'{shown}'"


def value_problems(data: Any, most: int = 20) -> list[tuple[tuple[int | str, ...], str]]:
    """What JSON or MongoDB cannot hold in `data`, each with its place (at most `most`): nesting
    past `MAX_DEPTH` (or a structure that contains itself), integers past 64 bits, NaN and
    infinities, text that is not UTF-8, NUL in keys, more than `MAX_VALUES` values.

    The walk is iterative and stops at the limits, so that no input makes it recurse or run
    long: an alias bomb is refused after `MAX_VALUES` steps, not expanded.
    """
    problems: list[tuple[tuple[int | str, ...], str]] = []
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    for _ in range(MAX_VALUES + 1):
        if not stack or len(problems) >= most:
            return problems
        value, loc = stack.pop()
        problem = _value_problem(value, len(loc) + 1)
        if problem is not None:
            problems.append((loc, problem))
        elif isinstance(value, Mapping | list | tuple):
            children = list(_children(value, loc, problems))
            stack.extend(reversed(children))
    problems.append(((), f"holds more than {MAX_VALUES:,} values (YAML aliases that expand?)"))
    return problems


def _value_problem(value: Any, depth: int) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        shown = str(value) if value.bit_length() < 128 else f"of {value.bit_length():,} bits"
        return (
            f"the integer {shown} does not fit in 64 bits: MongoDB stores integers from -2^63 "
            "to 2^63-1 (write a larger number as a string)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a number JSON can hold (NaN and Infinity are not JSON)"
    if isinstance(value, str) and not value.isascii() and not is_utf8(value):
        return "the text is not valid UTF-8 (it holds a lone surrogate)"
    if isinstance(value, Mapping | list | tuple) and depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep (or it contains itself)"
    return None


def _children(
    value: Mapping[Any, Any] | list[Any] | tuple[Any, ...],
    loc: tuple[int | str, ...],
    problems: list[tuple[tuple[int | str, ...], str]],
) -> Iterator[tuple[Any, tuple[int | str, ...]]]:
    """The items of a list or object with their places; bad keys go to `problems`."""
    if not isinstance(value, Mapping):
        yield from ((item, (*loc, index)) for index, item in enumerate(value))
        return
    for key, item in value.items():
        if isinstance(key, str) and ("\0" in key or not is_utf8(key)):
            what = "a NUL character" if "\0" in key else "text that is not UTF-8"
            problems.append((loc, f"the key {show(key)} holds {what}, which MongoDB refuses in keys"))
            continue
        yield item, (*loc, key if isinstance(key, str | int) else str(key))


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_json(text: str) -> Any:
    """JSON, refusing duplicate keys and NaN/Infinity (Python's `json` accepts both)."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise Refused(f"duplicate key {show(key)} in an object: keys must be unique")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise Refused(f"{name} is not JSON (it has no NaN or Infinity); write a number or null")
