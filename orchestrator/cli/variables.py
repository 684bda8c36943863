"""Variables given on the command line (`--var KEY=VALUE`, `--vars JSON`), checked before a run."""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator.cli.base import cli_settings


def parse_vars(pairs: tuple[str, ...], as_json: str | None, max_bytes: int | None = None) -> dict[str, Any]:
    """`--vars JSON` then each `--var KEY=VALUE` (JSON when it parses, else a string).

    Variables no run could hold are refused (exit 2), each naming the variable: NaN and
    Infinity, integers past 64 bits, nesting past `json_values.MAX_DEPTH`, text that is not UTF-8
    (a command line in another encoding), NUL in keys, and more than `max_bytes` in all
    (default: half of `ORCH_MAX_RUN_DOC_BYTES`, as the launcher allows).
    """
    variables: dict[str, Any] = {}
    if as_json:
        loaded = _json_option(as_json, "--vars")
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--vars")
        variables.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--var")
        try:
            variables[key] = _json_option(raw, f"--var {key}")
        except _NotJson:
            variables[key] = raw
    _check_variables(variables, max_bytes)
    return variables


class _NotJson(Exception):
    """A `--var` value that is not JSON: it is taken as a string."""


def _json_option(text: str, hint: str) -> Any:
    """The JSON in an option's value; `_NotJson` when it is not JSON, a `BadParameter` when it
    is JSON that a run cannot hold (NaN, a number past 4300 digits, deep nesting)."""
    from orchestrator.definitions.json_values import MAX_DEPTH, load_json

    try:
        json.loads(text)  # JSON at all? (as Python reads it: `NaNcy` is not, `NaN` is)
    except json.JSONDecodeError as exc:
        if hint == "--vars":
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint=hint) from exc
        raise _NotJson() from exc
    except (ValueError, RecursionError):
        pass  # JSON, too large or deep to read: said below
    try:
        return load_json(text)  # strictly: no NaN, Infinity nor duplicate keys
    except RecursionError:
        raise click.BadParameter(f"nested more than {MAX_DEPTH} levels deep", param_hint=hint) from None
    except ValueError as exc:  # NaN, Infinity, a duplicate key, an integer past 4300 digits
        message = str(exc).split("; use sys.set_int_max_str_digits()")[0]
        raise click.BadParameter(message, param_hint=hint) from None


def _check_variables(variables: dict[str, Any], max_bytes: int | None) -> None:
    """Refuse variables that MongoDB or a run's document cannot hold."""
    import bson

    from orchestrator.definitions.json_values import value_problems

    problems = value_problems(variables, most=1)
    if problems:
        loc, problem = problems[0]
        where = ".".join(str(p) for p in loc[:8]) or "(variables)"
        raise click.BadParameter(f"variable '{where}': {problem}", param_hint="--var/--vars")
    budget = cli_settings().max_run_doc_bytes // 2 if max_bytes is None else max_bytes
    size = len(bson.encode({"variables": variables}))
    if size > budget:
        raise click.BadParameter(
            f"the variables take {size / 1024:,.0f} KiB; a run's variables may take "
            f"{budget / 1024:,.0f} KiB, half its document's limit (ORCH_MAX_RUN_DOC_BYTES): pass "
            "identifiers (a symbol, a date, a key), not datasets",
            param_hint="--var/--vars",
        )
