"""`python`: runs a snippet of Python written by the workflow's author, in a sandbox.

The code is contained with bubblewrap (`bwrap`, the sandbox Flatpak uses), unless
`ORCH_PYTHON_SANDBOX=none` says otherwise:

- new PID, mount, IPC, UTS, cgroup and network namespaces: it sees only its own processes
  (a fresh `/proc`), reaches no network (a loopback of its own), and everything it starts dies
  with it, `setsid()` or not, when the node ends or is stopped (its PID namespace's init goes);
- a root file system of its own: read-only `/usr` (and `/lib*`, `/etc/ld.so.cache`,
  `/etc/localtime`), the interpreter's prefix and virtualenv read-only, a minimal `/dev`, and
  a private working directory (`/sandbox`, also `HOME`) of `WORKDIR_BYTES` in memory; nothing
  else of the worker's files, and an environment of `HOME` and `LANG` alone;
- as an unprivileged user: the worker's own user in a user namespace, or `nobody` when the
  worker runs as root (which the kernel exempts from the process limit);
- limits: `RLIMIT_AS` = `memory_mb`, `RLIMIT_NPROC` = `MAX_TASKS` (processes and threads),
  `RLIMIT_CPU` = the timeout on every CPU, the wall-clock `timeout_s`.

Without bwrap (`none`), it runs as `python -I` with the worker's user, files and network, in
a temporary directory, under `RLIMIT_AS` and `RLIMIT_CPU`. In both modes, the reply and what
the code prints are each read up to `MAX_OUTPUT_BYTES` (more stops the code and fails the
node), and the printed tail reaches the worker log with every line prefixed by `LOG_PREFIX`.

Protocol: the inputs go in as JSON on stdin: `variables`, `nodes` (`{id: {output: ...}}`, as
templates see them) and `run` (`{id, workflow}`) become globals of the code. The code sets the
global `result` (`exit(0)` ends it early); its value, as JSON, is the node's output. The
runner moves the process's stdout to stderr before the code runs, so `print` (even from C
extensions) cannot corrupt the reply, which goes back on a duplicate of the original stdout.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError, NodeTimeout
from orchestrator.services.processes import die_with_parent
from orchestrator.store.node_logs import NOT_FOR_NODE_LOG

STDERR_TAIL_BYTES = 2000
MAX_OUTPUT_BYTES = 8 * 1024 * 1024  # the reply, and what the code prints: each
MAX_TASKS = 128  # processes and threads (numpy's OpenBLAS starts up to 64 threads)
WORKDIR_BYTES = 256 * 1024 * 1024
SANDBOX_DIR = "/sandbox"
NOBODY = 65534
LOG_PREFIX = "  | "
BWRAP_NEEDED = (
    "the python node needs bubblewrap (`apt-get install bubblewrap`) to contain its code; "
    "set ORCH_PYTHON_SANDBOX=none to run it uncontained (it then runs as the worker's user, "
    "with its files and network)"
)
_POLL_S = 0.2
_CHUNK = 64 * 1024
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), 127] if code != ord("\t")}

# Runs in the child. Kept dependency-free and small: it sets the limits (and, started as root
# in the sandbox, becomes `nobody`), protects the reply channel from prints, runs the code and
# reports one JSON document.
RUNNER = r"""
import ctypes, json, linecache, os, resource, signal, sys, traceback

def report(out, data):
    out.write(json.dumps(data))
    out.flush()

def cap(kind, soft, hard):
    ceiling = resource.getrlimit(kind)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))

def user_traceback(exc):
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines[-12:])

def main():
    memory, watchdog, cpu, tasks, uid = (int(arg) for arg in sys.argv[1:6])
    cap(resource.RLIMIT_AS, memory, memory)
    cap(resource.RLIMIT_CPU, cpu, cpu + 5)  # SIGXCPU, then SIGKILL
    if tasks:
        cap(resource.RLIMIT_NPROC, tasks, tasks)
    if uid >= 0 and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        ctypes.CDLL(None).prctl(4, 1)  # PR_SET_DUMPABLE, unset by setuid: its /proc/self is its own
    os.environ.pop("PWD", None)  # bwrap sets it; the code gets HOME and LANG alone, sandbox or not
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
    memory_mb: int = Field(default=512, ge=32, le=4096)


class OutputTooLarge(Exception):
    """The code wrote more than `MAX_OUTPUT_BYTES` to its reply or its prints."""


@dataclass(frozen=True)
class Outcome:
    """What the runner left: its reply, the tail of its prints (raw) and its exit code."""

    reply: bytes
    printed: str
    returncode: int


def run(params: PythonParams, context: NodeContext) -> Any:
    """Run the code in the sandbox and return its `result`; fail the node on any trouble."""
    where = f"node '{context.node_id}' (python)"
    sandboxed = context.settings.python_sandbox == "bwrap"
    bwrap = _usable_bwrap(where) if sandboxed else None
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
    try:
        outcome = execute(payload, params.memory_mb, timeout, bwrap)
    except subprocess.TimeoutExpired as exc:
        what = "its node's timeout_s" if by_node else "parameter 'timeout_s'"
        raise NodeTimeout(f"{where}: the code ran past {timeout:g} s ({what}) and was stopped") from exc
    except OutputTooLarge as exc:
        raise NodeError(f"{where}: {exc}") from exc
    printed = quoted(outcome.printed)
    if printed:
        if context.log_sink is not None:
            for line in outcome.printed.splitlines():
                context.log_sink("PRINT", line)
        logging.getLogger(f"orchestrator.node.{context.node_id}").info(
            "%s printed:\n%s", where, printed, extra={NOT_FOR_NODE_LOG: True}
        )
    return interpret(outcome.reply, outcome.returncode, printed, params.memory_mb, where)


def quoted(text: str) -> str:
    """`text` with each line behind `LOG_PREFIX` and control characters escaped, so that no
    line the code printed can pass for a line of the worker log."""
    return "\n".join(LOG_PREFIX + line.translate(_CONTROLS) for line in text.splitlines())


# -- running it ---------------------------------------------------------------------------


def execute(payload: dict[str, Any], memory_mb: int, timeout: float, bwrap: str | None) -> Outcome:
    """Run the runner with the payload on stdin, in the sandbox of `bwrap` (none when None).

    Raises:
        subprocess.TimeoutExpired: after killing the code, when `timeout` passed.
        OutputTooLarge: after killing the code, when its reply or its prints passed the limit.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = [memory_mb * 1024 * 1024, math.ceil(timeout) + 2, math.ceil(timeout * cpus) + 2]
    limits += [MAX_TASKS, NOBODY] if bwrap else [0, -1]
    runner = [sys.executable, "-I", "-c", RUNNER, *map(str, limits)]
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as stdin, contextlib.ExitStack() as stack:
        stdin.write(json.dumps(payload, default=str).encode())
        stdin.seek(0)
        if bwrap:
            command, cwd, env = [bwrap, *sandbox_options(), *runner], "/", {}
        else:
            cwd = stack.enter_context(tempfile.TemporaryDirectory(prefix="orch-python-"))
            command, env = runner, {"HOME": cwd, "LANG": "C.UTF-8"}
        with _started(command, cwd, env, stdin) as process:
            try:
                with _group_killed_on_sigterm(process):  # a cancel terminates the pool process
                    reply, printed = _collect(process, deadline, timeout)
                    process.wait(max(deadline - time.monotonic(), 0.01))
            finally:  # a timeout, too much output, or the worker's own time limit striking
                if process.poll() is None:
                    _kill_group(process)
    returncode = process.returncode
    if bwrap and 128 < returncode <= 128 + 64:  # bwrap exits 128+N when the code died of signal N
        returncode = 128 - returncode
    return Outcome(reply, printed, returncode)


def _started(command: list[str], cwd: str, env: dict[str, str], stdin: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGKILL),  # the pool process killed: the code too
    )


class _Capped:
    """One output stream of the code, read up to `MAX_OUTPUT_BYTES`; all kept, or a tail."""

    def __init__(self, too_much: str, keep: int | None = None) -> None:
        self.too_much, self.keep, self.size, self.data = too_much, keep, 0, bytearray()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_OUTPUT_BYTES:
            raise OutputTooLarge(self.too_much)
        self.data += chunk
        if self.keep is not None:
            del self.data[: -self.keep]


def _collect(process: subprocess.Popen[bytes], deadline: float, timeout: float) -> tuple[bytes, str]:
    """The reply (stdout) and the tail of the prints (stderr), read as they come.

    Raises:
        subprocess.TimeoutExpired: past `deadline`.
        OutputTooLarge: when either stream passes `MAX_OUTPUT_BYTES`.
    """
    assert process.stdout is not None and process.stderr is not None
    limit = f"{MAX_OUTPUT_BYTES // (1024 * 1024)} MiB"
    reply = _Capped(f"the code's reply (`result` as JSON) is over {limit}, the most a python node may "
                    "return; it was stopped")  # fmt: skip
    printed = _Capped(f"the code printed over {limit}, the most a python node may print; it was stopped",
                      keep=STDERR_TAIL_BYTES)  # fmt: skip
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, reply)
        selector.register(process.stderr, selectors.EVENT_READ, printed)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(process.args, timeout)
            events = selector.select(min(left, _POLL_S))
            if not events and process.poll() is not None:
                break  # it ended, and a process it started holds the pipes (no sandbox)
            for key, _ in events:
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fileobj)
    text = printed.data.decode("utf-8", errors="replace").strip()
    return bytes(reply.data), ("…" + text if printed.size > len(printed.data) else text)


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
    """SIGKILL the code's process group: without a sandbox, the code and what it started in its
    session; with one, bwrap, whose init inside then dies with it, and the whole PID namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# -- the sandbox --------------------------------------------------------------------------


def _usable_bwrap(where: str) -> str:
    """The path of a bwrap that can run the sandbox; a NodeError saying what to do if none."""
    bwrap = shutil.which("bwrap")
    problem = bwrap_problem(bwrap)
    if bwrap is None or problem:
        raise NodeError(f"{where}: {BWRAP_NEEDED} ({problem})")
    return bwrap


@functools.cache
def bwrap_problem(bwrap: str | None) -> str:
    """Why `bwrap` cannot run the sandbox ("" when it can): it starts the interpreter in the
    sandbox once. Cached per process and path."""
    if bwrap is None:
        return "no `bwrap` on PATH"
    try:
        probe = subprocess.run(
            [bwrap, *sandbox_options(), sys.executable, "-I", "-c", "pass"],
            capture_output=True, cwd="/", env={}, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{bwrap}: {exc}"
    if probe.returncode == 0:
        return ""
    said = probe.stderr.decode(errors="replace").strip().splitlines()
    return f"{bwrap} failed: {said[-1] if said else f'exit code {probe.returncode}'}"


def sandbox_options() -> list[str]:
    """bwrap's options, up to the command: namespaces, the file system, the environment.

    A worker running as root gets no user namespace (it would map root to root, whom the
    kernel exempts from RLIMIT_NPROC): the runner starts as root in the new namespaces and
    becomes `nobody` before the code runs."""
    if os.geteuid() == 0:
        unshare = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        unshare = ["--unshare-all"]  # the user namespace with the others
    environment = ["--clearenv", "--setenv", "HOME", SANDBOX_DIR, "--setenv", "LANG", "C.UTF-8"]
    workdir = ["--perms", "1777", "--size", str(WORKDIR_BYTES), "--tmpfs", SANDBOX_DIR]
    return [
        *unshare, "--die-with-parent", "--new-session", *environment,
        "--proc", "/proc", "--dev", "/dev", *_read_only_mounts(), *workdir,
        "--remount-ro", "/", "--chdir", SANDBOX_DIR,
    ]  # fmt: skip


def _read_only_mounts() -> list[str]:
    """What Python needs, read-only: /usr, /lib*, the loader's cache, the time zone, the
    interpreter's prefix and its virtualenv. Parent directories are made world-readable
    (bwrap makes them 0700, which `nobody` could not cross)."""
    options, made = ["--ro-bind", "/usr", "/usr"], {"/"}
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            options += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            options += ["--ro-bind", top, top]
    bound = ["/usr"]
    wanted = [
        "/etc/ld.so.cache",
        "/etc/localtime",
        sys.base_prefix,
        sys.prefix,
        sys.base_exec_prefix,
        sys.exec_prefix,
    ]
    for path in wanted:
        if not os.path.exists(path) or any(os.path.commonpath([path, done]) == done for done in bound):
            continue
        for parent in _parents(path):
            if parent not in made:
                options += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        options += ["--ro-bind", path, path]
        bound.append(path)
    return options


def _parents(path: str) -> list[str]:
    parents, parent = [], os.path.dirname(path)
    while parent not in ("/", ""):
        parents.append(parent)
        parent = os.path.dirname(parent)
    return parents[::-1]


# -- the outcome --------------------------------------------------------------------------


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
        raise NodeError(
            f"{where}: the code's process was killed by {name}{_hint(name, memory_mb)}" + _printed(printed)
        )
    raise NodeError(
        f"{where}: the code's process exited with code {returncode} before reporting a result"
        + _printed(printed)
    )


def _hint(signal_name: str | int, memory_mb: int) -> str:
    if signal_name in ("SIGKILL", "SIGSEGV", "SIGABRT"):
        return f" (out of memory? memory_mb={memory_mb})"
    if signal_name == "SIGALRM":
        return " (its timeout watchdog)"
    if signal_name == "SIGXCPU":
        return " (its CPU-time limit: timeout_s on every CPU)"
    return ""


def _printed(printed: str) -> str:
    return f"; its last output:\n{printed}" if printed else ""


node_type = NodeType(
    name="python",
    params=PythonParams,
    run=run,
    description="runs Python code of the workflow's author in a bubblewrap sandbox with a timeout and limits",
    sees_all_nodes=True,  # the code is given every finished node's output
)
