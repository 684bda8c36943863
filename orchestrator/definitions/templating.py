"""`{{ templates }}` in params and outputs: Jinja2 in a sandbox, with native types.

A string that is exactly one `{{ expression }}` keeps the expression's type (number, list,
object); any other string renders as text. Undefined names are errors that say where.

Templates come from workflow files, so they are bounded where Jinja2's sandbox is not:

- registration only parses them (`syntax_errors`): compiling runs Jinja2's optimizer, which
  evaluates constant expressions such as `{{ 9 ** (9 ** 9) }}` in the caller;
- rendering stops at a deadline (`render`'s `timeout_s`, `RENDER_TIMEOUT_S` by default): a
  watchdog thread raises in the rendering thread, which stops a loop of the template's own;
- arithmetic and functions that make huge values in one step are refused before they run
  (`**` and `*` past `MAX_INT_BITS`, repetition, padding and widths past `MAX_REPEAT`), and
  rendered text past `MAX_OUTPUT_CHARS` is refused while it is produced;
- compiled templates are kept in an LRU of `CACHE_SIZE` entries.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import re
import string
import threading
import time
import types
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, filters, nodes
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum, pass_environment, pass_eval_context
from pydantic import JsonValue

from orchestrator.errors import TemplateError

RENDER_TIMEOUT_S = 10.0
"""How long one `render` call may take when the caller gives no deadline."""
MAX_OUTPUT_CHARS = 4 * 1024 * 1024
"""The longest text a template may produce (a rendered string, a string it builds up)."""
MAX_REPEAT = 1024 * 1024
"""The most characters or items one repetition, padding or width may make."""
MAX_INT_BITS = 1024
"""The largest integer `**` and `*` may make in a template."""
CACHE_SIZE = 512
"""Compiled templates kept, most recently used first."""

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")
_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


# -- limits ---------------------------------------------------------------------------------


def _refuse(message: str) -> NoReturn:
    raise SecurityError(message)


def _check_count(count: Any, what: str, limit: int = MAX_REPEAT) -> None:
    """Refuse a width, repeat count or size past `limit`."""
    if isinstance(count, int) and count > limit:
        _refuse(f"{what} of {count:,} is past the limit of {limit:,}")


def _check_length(value: Any, what: str) -> None:
    if isinstance(value, str | list | tuple) and len(value) > MAX_OUTPUT_CHARS:
        _refuse(f"{what} of {len(value):,} is past the limit of {MAX_OUTPUT_CHARS:,}")


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `**`, `*` and `%` that would make a huge value, before Python makes it."""
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        # |left| ** right has about (bits(left) - 1) * right bits, and at least that many
        if right > 0 and _int_bits(left) > 1 and (_int_bits(left) - 1) * right > MAX_INT_BITS:
            _refuse(f"{left} ** {right} makes an integer past {MAX_INT_BITS} bits")
    elif operator == "*":
        _check_product(left, right)
    elif operator == "%" and isinstance(left, str):
        _check_printf(left, right)


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if _int_bits(left) + _int_bits(right) > MAX_INT_BITS + 1:
            _refuse(f"the product makes an integer past {MAX_INT_BITS} bits")
        return
    sequence, count = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(count, int) and isinstance(sequence, str | list | tuple):
        _check_count(len(sequence) * count, "a repetition's length")


def _check_printf(text: str, args: Any) -> None:
    """Refuse `text % args` whose widths or repeated fields make a huge string."""
    values = args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else (args,)
    fields = _PRINTF_FIELD.findall(text)
    for width, precision in fields:
        for part in (width, precision):
            if part == "*":
                for value in values:
                    _check_count(value, "a width")
            elif part:
                _check_count(int(part), "a width")
    longest = max((len(str(v)) for v in values if isinstance(v, str | list | tuple | Mapping)), default=0)
    _check_count(len(text) + len(fields) * longest, "the formatted text's length", MAX_OUTPUT_CHARS)


def _check_str_format(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse `text.format(...)` whose widths or repeated fields make a huge string."""
    values = [*args, *kwargs.values()]
    fields = 0
    for _, field, spec, _ in string.Formatter().parse(text):
        fields += field is not None
        for digits in re.findall(r"\d+", spec or ""):
            _check_count(int(digits), "a width")
        if spec and "{" in spec:
            for value in values:
                _check_count(value, "a width")
    longest = max((len(str(v)) for v in values if isinstance(v, str | list | tuple | Mapping)), default=0)
    _check_count(len(text) + fields * longest, "the formatted text's length", MAX_OUTPUT_CHARS)


_PADDING = frozenset({"ljust", "rjust", "center", "zfill"})


def _is_str_method(obj: Any, name: str | None = None) -> bool:
    return (
        isinstance(obj, types.BuiltinMethodType)
        and isinstance(obj.__self__, str)
        and (name is None or obj.__name__ == name)
    )


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse calls that make huge strings in one step: padding, `expandtabs`, `join`,
    `replace`, `format`, and macros given huge text (a macro that doubles its text on each
    call)."""
    if isinstance(obj, Macro):
        for value in (*args, *kwargs.values()):
            _check_length(value, "text given to a macro")
        return
    wrapped: Any = getattr(obj, "__wrapped__", None)  # the sandbox wraps str.format
    if _is_str_method(wrapped, "format") or _is_str_method(wrapped, "format_map"):
        given = args[0] if wrapped.__name__ == "format_map" and args else kwargs
        given = given if isinstance(given, Mapping) else {}
        _check_str_format(wrapped.__self__, args if wrapped.__name__ == "format" else (), given)
        return
    if not _is_str_method(obj):
        return
    owner: str = obj.__self__
    name = obj.__name__
    if name in _PADDING and args:
        _check_count(args[0], f"str.{name}'s width")
    elif name == "expandtabs":
        _check_count(len(owner) * (args[0] if args and isinstance(args[0], int) else 8), "expanded text")
    elif name == "join" and args and isinstance(args[0], list | tuple):
        _check_count(len(owner) * len(args[0]), "the joined text's length", MAX_OUTPUT_CHARS)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else None)


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        found = text.count(old)
        found = min(found, count) if isinstance(count, int) and count >= 0 else found
        size = len(text) + found * (len(new) - len(old))
        _check_count(size, "the replaced text's length", MAX_OUTPUT_CHARS)


class _BoundedNamespace(Namespace):
    """`namespace()`, refusing huge text or lists set on it (a loop that doubles a string)."""

    def __setitem__(self, name: str, value: Any) -> None:
        _check_length(value, f"the length of namespace attribute '{name}'")
        super().__setitem__(name, value)


# Filters that make text or lists of a size their arguments choose, checked first.


def _center(value: str, width: int = 80) -> str:
    _check_count(width, "center's width")
    return filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    size = len(width) if isinstance(width, str) else width
    _check_count(size, "indent's width")
    if isinstance(size, int):
        lines = str(s).count("\n") + 1
        _check_count(len(str(s)) + size * lines, "the indented text's length", MAX_OUTPUT_CHARS)
    return filters.do_indent(s, width, first, blank)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    _check_count(linecount, "batch's size")
    return filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    _check_count(slices, "slice's count")
    return filters.do_slice(value, slices, fill_with)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value), kwargs or args)
    return filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    _check_count(indent, "tojson's indent", 64)
    return filters.do_tojson(eval_ctx, value, indent)


@pass_eval_context
def _replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    _check_replace(str(s), str(old), str(new), count)
    return str(filters.do_replace(eval_ctx, s, old, new, count))


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: str | int | None = None) -> Any:
    items = value if isinstance(value, list | tuple) else list(value)  # a `map` result, say
    _check_count(len(str(d)) * len(items), "the joined text's length", MAX_OUTPUT_CHARS)
    return filters.do_join(eval_ctx, items, d, attribute)


@pass_environment
def _wordwrap(environment: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
    _check_count(len(str(wrapstring)) * (len(s) + 1), "the wrapped text's length", MAX_OUTPUT_CHARS)
    return filters.do_wordwrap(environment, s, width, *args, **kwargs)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _check_count(n * max, "lipsum's words", 100_000)
    return generate_lorem_ipsum(n, html, min, max)


_BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "batch": _batch,
    "slice": _slice,
    "format": _format,
    "tojson": _tojson,
    "replace": _replace,
    "join": _join,
    "wordwrap": _wordwrap,
}


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the size checks above: on `**`, `*` and `%` (Jinja2 calls
    `call_binop` for intercepted operators, and its optimizer leaves them unfolded), on calls,
    on the filters that take sizes, and on `namespace` and `lipsum`."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.filters.update(_BOUNDED_FILTERS)
        self.globals.update(namespace=_BoundedNamespace, lipsum=_lipsum)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_str_method(__obj, "join") and args and not isinstance(args[0], list | tuple):
            args = (list(args[0]), *args[1:])  # measured, then joined
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


@lru_cache(maxsize=1)
def _environment() -> _BoundedEnvironment:
    return _BoundedEnvironment()


# -- the deadline ---------------------------------------------------------------------------


class _RenderTimeout(BaseException):
    """Raised in a rendering thread at its deadline (a BaseException: no `except Exception`
    of a template's filters or of Jinja2 swallows it)."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in another thread at its next bytecode (None: clear a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class _Watchdog:
    """One daemon thread per process that raises `_RenderTimeout` in threads still rendering
    at their deadline. Works on any thread (Celery's prefork, threads and solo pools), where
    `SIGALRM` works only on the main thread; a template's own loops stop at the deadline
    (one C call, such as a huge multiplication, is refused before it starts instead).

    An exception raised from outside can strike between any two bytecodes of the rendering
    thread, so what that thread runs while the clock may strike holds no lock written in
    Python (a `threading.Condition` would stay locked if it struck inside its `__enter__`):
    only C locks, whose `with` cannot be split, and a C lock as the watcher's alarm clock.
    """

    def __init__(self) -> None:
        self._forget()
        self._hooked = False

    def _forget(self) -> None:
        """Start afresh: in a forked child, the parent's thread is gone and its locks unknown."""
        self._lock = threading.Lock()  # guards `_armed` and `_next_wake`; a striking is done under it
        self._wake = threading.Lock()  # held while the watcher sleeps; released to wake it early
        self._wake.acquire()
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
        self._next_wake = math.inf
        self._tokens = itertools.count()
        self._pid = 0

    def arm(self, seconds: float) -> int:
        """Start the clock for the calling thread; the token to give `disarm`."""
        if self._pid != os.getpid():
            self._start()
        deadline = time.monotonic() + seconds
        with self._lock:
            token = next(self._tokens)
            self._armed[token] = (deadline, threading.get_ident())
            sooner = deadline < self._next_wake
        if sooner:
            with contextlib.suppress(RuntimeError):  # already awake
                self._wake.release()
        return token

    def disarm(self, token: int) -> None:
        """Stop the clock; if it struck and its exception is not raised yet, cancel it."""
        with self._lock:
            if self._armed.pop(token, None) is None:
                _raise_in(threading.get_ident(), None)

    def _start(self) -> None:
        with _START_LOCK:
            if self._pid == os.getpid():
                return
            if not self._hooked:
                os.register_at_fork(after_in_child=self._forget)
                self._hooked = True
            self._pid = os.getpid()
            threading.Thread(target=self._watch, name="template-deadline", daemon=True).start()

    def _watch(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                for token, (deadline, thread_id) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        _raise_in(thread_id, _RenderTimeout)
                self._next_wake = min((deadline for deadline, _ in self._armed.values()), default=math.inf)
                pause = self._next_wake - now
            self._wake.acquire(timeout=pause if pause < math.inf else -1)


_START_LOCK = threading.Lock()
_WATCHDOG = _Watchdog()


# -- rendering ------------------------------------------------------------------------------


def has_template(value: str) -> bool:
    """Whether a string holds a `{{ }}` or `{% %}` template."""
    return "{{" in value or "{%" in value


def contains_template(value: Any) -> bool:
    """Whether a JSON value holds a template in any of its strings."""
    if isinstance(value, str):
        return has_template(value)
    if isinstance(value, list):
        return any(contains_template(item) for item in value)
    if isinstance(value, dict):
        return any(contains_template(item) for item in value.values())
    return False


def _single_expression(text: str) -> str | None:
    match = _SINGLE_EXPRESSION.match(text)
    if match is None or "{{" in match["expr"] or "}}" in match["expr"]:
        return None
    return match["expr"]


@lru_cache(maxsize=CACHE_SIZE)
def _compiled_expression(expr: str) -> Any:
    return _environment().compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=CACHE_SIZE)
def _compiled_template(text: str) -> Any:
    return _environment().from_string(text)


def render_string(text: str, scope: Mapping[str, Any]) -> Any:
    """Render one string: a single expression keeps its type, anything else becomes text."""
    if not has_template(text):
        return text
    expr = _single_expression(text)
    if expr is not None:
        value = _compiled_expression(expr)(**scope)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        _check_length(value, "the value's length")
        return value
    parts: list[str] = []
    size = 0
    for part in _compiled_template(text).generate(**scope):
        size += len(part)
        if size > MAX_OUTPUT_CHARS:
            _refuse(f"the rendered text passes {MAX_OUTPUT_CHARS:,} characters")
        parts.append(part)
    return "".join(parts)


def render(value: JsonValue, scope: Mapping[str, Any], where: str, timeout_s: float | None = None) -> Any:
    """Render every string inside `value` (recursively through lists and objects).

    Args:
        value: the JSON value holding templates.
        scope: the names templates may use.
        where: what is being rendered, for errors (`node 'fetch', parameter 'symbol'`).
        timeout_s: how long rendering may take (the time left to the node, when it has a
            deadline), never more than `RENDER_TIMEOUT_S` (a template is not where work
            belongs); `RENDER_TIMEOUT_S` when None.

    Raises:
        TemplateError: a syntax error, an undefined name, a sandbox violation, a value past
            the size limits, or rendering past the deadline, saying where.
    """
    limit = RENDER_TIMEOUT_S if timeout_s is None else min(max(timeout_s, 0.001), RENDER_TIMEOUT_S)
    token = None
    try:
        try:
            token = _WATCHDOG.arm(limit)
            return _render(value, scope, where, "", limit)
        finally:
            if token is not None:
                _WATCHDOG.disarm(token)
    except _RenderTimeout:  # struck outside a string (between two of them)
        raise TemplateError(f"{where}: the templates took longer than {limit:g} s to render") from None


def _render(value: Any, scope: Mapping[str, Any], where: str, path: str, limit: float) -> Any:
    if isinstance(value, str):
        return _render_one(value, scope, f"{where}{path}", limit)
    if isinstance(value, list):
        return [_render(item, scope, where, f"{path}[{i}]", limit) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: _render(item, scope, where, f"{path}.{key}" if path else f".{key}", limit)
            for key, item in value.items()
        }
    return value


def _render_one(value: str, scope: Mapping[str, Any], where: str, limit: float) -> Any:
    try:
        return render_string(value, scope)
    except _RenderTimeout:
        raise TemplateError(
            f"{where}: template {_short(value)} took longer than {limit:g} s to render (a loop "
            "too long for a template: compute it in a node)"
        ) from None
    except UndefinedError as exc:
        match = _UNDEFINED_NAME.search(str(exc))
        name = next((g for g in match.groups() if g), str(exc)) if match else str(exc)
        raise TemplateError(f"{where}: undefined name '{name}' in template {value!r}") from exc
    except SecurityError as exc:
        raise TemplateError(f"{where}: not allowed in a template: {exc}") from exc
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error: {exc.message}") from exc
    except Exception as exc:  # any error the expression itself raises (1/0, bad types)
        raise TemplateError(f"{where}: template {_short(value)} failed: {type(exc).__name__}: {exc}") from exc


def _short(text: str, limit: int = 120) -> str:
    """A template for a message: as its repr, cut when long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}…"


# -- checks at registration -----------------------------------------------------------------


def syntax_errors(value: JsonValue, field: str) -> list[str]:
    """Template syntax errors and unknown filters or tests inside `value`, each as
    `field 'params.x': message`. Templates are parsed, never compiled nor rendered."""
    problems: list[str] = []
    if isinstance(value, str) and has_template(value):
        problem = _parse_problem(value)
        if problem is not None:
            problems.append(f"field '{field}': {problem}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += syntax_errors(item, f"{field}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            problems += syntax_errors(item, f"{field}.{key}")
    return problems


def _parse_problem(text: str) -> str | None:
    """What is wrong with a template that parsing finds: its syntax, filters and tests."""
    environment = _environment()
    try:
        expr = _single_expression(text)
        tree: nodes.Node = environment.parse(text) if expr is None else _parse_expression(expr)
    except TemplateSyntaxError as exc:
        return f"template syntax error in {_short(text)}: {exc.message}"
    except RecursionError:
        return f"template {_short(text)} is nested too deeply"
    for node in (tree, *tree.find_all((nodes.Filter, nodes.Test))):
        if not isinstance(node, nodes.Filter | nodes.Test):
            continue
        is_filter = isinstance(node, nodes.Filter)
        kind, known = ("filter", environment.filters) if is_filter else ("test", environment.tests)
        if node.name not in known:
            return f"template {_short(text)} uses the unknown {kind} '{node.name}'"
    return None


def _parse_expression(expr: str) -> nodes.Expr:
    """The tree of one expression, as `compile_expression` parses it (without compiling)."""
    parser = Parser(_environment(), expr, state="variable")
    tree = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    return tree


def referenced_nodes(value: JsonValue) -> set[str]:
    """Ids used as `nodes.<id>` in the templates inside `value` (for dependency checks)."""
    found: set[str] = set()
    if isinstance(value, str) and has_template(value):
        try:
            ast = _environment().parse(value)
        except (TemplateSyntaxError, RecursionError):
            return found
        for getattr_node in ast.find_all(nodes.Getattr):
            if isinstance(getattr_node.node, nodes.Name) and getattr_node.node.name == "nodes":
                found.add(getattr_node.attr)
    elif isinstance(value, list):
        for item in value:
            found |= referenced_nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            found |= referenced_nodes(item)
    return found


def build_scope(
    variables: Mapping[str, Any], outputs: Mapping[str, Any], run_id: str, workflow: str, **extra: Any
) -> dict[str, Any]:
    """The names a template sees: variables at top level, `nodes.<id>.output`, `run`, extras."""
    scope: dict[str, Any] = dict(variables)
    scope["nodes"] = {node_id: {"output": output} for node_id, output in outputs.items()}
    scope["run"] = {"id": run_id, "workflow": workflow}
    scope.update(extra)
    return scope
