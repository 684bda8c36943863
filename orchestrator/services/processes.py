"""Child processes that never outlive their parent: servers and workers started by the demo,
`orchestrator standalone` and the test suite.

Each child gets a session (process group) of its own, so a Ctrl-C in the terminal reaches
only the parent, which then stops its children in order; on Linux the kernel also sends the
child SIGTERM if the parent dies without doing so (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that asks Linux to send the child `sig` when its parent dies (None
    where that cannot be asked)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    cmd: Sequence[str],
    output: IO[bytes] | int = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a session of its own, tied to this process's life."""
    return subprocess.Popen(
        list(cmd),
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=die_with_parent(),  # only prctl and getppid: safe after fork
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a child (SIGTERM, then SIGKILL after `timeout`), reap it, and kill whatever is
    left of its process group (a worker's pool processes, a forked helper)."""
    if process.poll() is not None:
        return
    own_group = False
    with contextlib.suppress(ProcessLookupError):
        own_group = os.getpgid(process.pid) == process.pid
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if own_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
