"""`python`: runs a snippet of Python written by the workflow's author, in a separate process.

This is for code the workflow's *author* wrote, not for untrusted code: the process is
isolated for robustness (a crash, a runaway loop or a memory blow-up fails the node and leaves
the worker healthy) and for hygiene (it sees none of the worker's environment variables, so
no secrets), but it runs as the worker's user, with the worker's files and network.

How it runs: `python -I -c RUNNER` (isolated mode: no `PYTHON*` variables, no user site),
with an empty environment apart from `HOME`/`LANG`, in a fresh temporary directory, in its own
session (so a timeout kills everything it started), under `RLIMIT_AS` = `memory_mb`, with
a `SIGALRM` watchdog a little past the timeout in case the worker itself is killed. The
inputs go in as JSON on stdin: `variables`, `nodes` (`{id: {output: ...}}`, as templates see
them) and `run` (`{id, workflow}`) become globals of the code. The code sets the global
`result` (`exit(0)` ends it early); its value, as JSON, is the node's output. The runner
moves the process's stdout to stderr before the code runs, so `print` (even from C
extensions) cannot corrupt the reply, which goes back on a duplicate of the original stdout;
prints end up in the worker log.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import NodeError, NodeTimeout
from orchestrator.processes import die_with_parent
from orchestrator.registry import NodeContext, NodeType

STDERR_TAIL_CHARS = 2000

# Runs in the child. Kept dependency-free and small: it sets the memory limit, protects the
# reply channel from prints, runs the code and reports one JSON document.
RUNNER = r"""
import json, linecache, os, resource, signal, sys, traceback

def report(out, data):
    out.write(json.dumps(data))
    out.flush()

def user_traceback(exc):
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines[-12:])

def main():
    limit, watchdog = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.alarm(watchdog)  # dies by itself should the worker that waits for it be killed
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    data = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    code = data.pop("code")
    linecache.cache["<code>"] = (len(code), None, code.splitlines(True), "<code>")
    scope = {"__name__": "__main__", "result": None, **data}
    try:
        exec(compile(code, "<code>", "exec"), scope)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            message = f"SystemExit: the code called exit({exc.code!r})"
            report(out, {"ok": False, "kind": "raised", "message": message, "traceback": ""})
            return
    except MemoryError as exc:
        scope.clear()
        message = traceback.format_exception_only(type(exc), exc)[-1].strip()
        report(out, {"ok": False, "kind": "memory", "message": message})
        return
    except BaseException as exc:
        message = traceback.format_exception_only(type(exc), exc)[-1].strip()
        report(out, {"ok": False, "kind": "raised", "message": message, "traceback": user_traceback(exc)})
        return
    finally:
        sys.stdout.flush()
    try:
        text = json.dumps(scope.get("result"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        kind = type(scope.get("result")).__name__
        report(out, {"ok": False, "kind": "result", "message": f"{kind}: {exc}"})
        return
    out.write('{"ok": true, "result": ' + text + "}")
    out.flush()

main()
"""


class PythonParams(BaseModel):
    """The code to run, and the limits it runs under."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    memory_mb: int = Field(default=512, ge=32, le=1024 * 1024)


def run(params: PythonParams, context: NodeContext) -> Any:
    """Run the code in a subprocess and return its `result`; fail the node on any trouble."""
    payload = {
        "code": params.code,
        "variables": dict(context.variables),
        "nodes": {node_id: {"output": output} for node_id, output in context.outputs.items()},
        "run": {"id": context.run_id, "workflow": context.workflow},
    }
    timeout, by_node = params.timeout_s, False
    left = context.seconds_left()
    if left is not None and left < timeout:
        timeout, by_node = max(left, 0.01), True
    where = f"node '{context.node_id}' (python)"
    with tempfile.TemporaryDirectory(prefix="orch-python-") as workdir, tempfile.TemporaryFile() as errors:
        try:
            reply, returncode = execute(payload, params.memory_mb, timeout, workdir, errors)
        except subprocess.TimeoutExpired as exc:
            what = "its node's timeout_s" if by_node else "parameter 'timeout_s'"
            raise NodeTimeout(f"{where}: the code ran past {timeout:g} s ({what}) and was stopped") from exc
        printed = _tail(errors)
    if printed:
        context.logger.info("%s printed:\n%s", where, printed)
    return interpret(reply, returncode, printed, params.memory_mb, where)


def execute(
    payload: dict[str, Any], memory_mb: int, timeout: float, workdir: str, errors: IO[bytes]
) -> tuple[bytes, int]:
    """Run the runner with the payload on stdin; its stdout and exit code.

    Raises:
        subprocess.TimeoutExpired: after killing the process group, when `timeout` passed.
    """
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", RUNNER, str(memory_mb * 1024 * 1024), str(math.ceil(timeout) + 2)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        cwd=workdir,
        env={"HOME": workdir, "LANG": "C.UTF-8"},
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGKILL),  # the pool process killed: the code too
    )
    try:
        with _group_killed_on_sigterm(process):  # a cancel terminates the pool process
            reply, _ = process.communicate(json.dumps(payload, default=str).encode(), timeout=timeout)
    finally:  # a timeout, or the worker's own time limit striking while we wait
        if process.poll() is None:
            _kill_group(process)
    return reply, process.returncode


@contextlib.contextmanager
def _group_killed_on_sigterm(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """While the code runs, SIGTERM (a cancel's revoke with terminate) kills the code's whole
    process group before this process exits. Only in the main thread, where handlers live."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        _kill_group(process)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(size - STDERR_TAIL_CHARS, 0))
    text = stream.read().decode("utf-8", errors="replace").strip()
    return ("…" + text) if size > STDERR_TAIL_CHARS else text


def interpret(reply: bytes, returncode: int, printed: str, memory_mb: int, where: str) -> Any:
    """The result from the runner's reply, or a NodeError saying what went wrong."""
    try:
        report = json.loads(reply) if reply.strip() else None
    except ValueError:
        report = None
    if isinstance(report, dict) and report.get("ok") is True:
        return report.get("result")
    if isinstance(report, dict):
        kind, message = report.get("kind"), report.get("message", "")
        if kind == "memory":
            raise NodeError(
                f"{where}: the code ran out of memory ({message}); the limit is memory_mb={memory_mb}"
            )
        if kind == "result":
            raise NodeError(
                f"{where}: `result` is not JSON ({message}); set it to numbers, strings, "
                "booleans, null, lists and dicts with string keys"
            )
        trace = str(report.get("traceback") or "").strip()
        raise NodeError(f"{where}: the code raised {message}" + (f"\n{trace}" if trace else ""))
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
        hint = f" (out of memory? memory_mb={memory_mb})" if name in ("SIGKILL", "SIGSEGV", "SIGABRT") else ""
        hint = " (its timeout watchdog)" if name == "SIGALRM" else hint
        raise NodeError(f"{where}: the code's process was killed by {name}{hint}" + _printed(printed))
    raise NodeError(
        f"{where}: the code's process exited with code {returncode} before reporting a result"
        + _printed(printed)
    )


def _printed(printed: str) -> str:
    return f"; its last output:\n{printed}" if printed else ""


node_type = NodeType(
    name="python",
    params=PythonParams,
    run=run,
    description="runs Python code of the workflow's author in a subprocess with a timeout and memory cap",
)
