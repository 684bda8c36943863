"""Child processes for the peer benchmarks: each in its own process group, always stopped, waited on
with a deadline.

A peer's server or runner starts processes of its own (Prefect's `serve` spawns one per flow
run), so each is started in a new session and stopped by signalling its whole group: SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

GRACE_S = 10.0  # between SIGTERM and SIGKILL
HTTP_POLL_S = 0.5


class PeerError(RuntimeError):
    """A peer could not be set up or measured; the message says what and where to look."""


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(process: subprocess.Popen[str], grace: float = GRACE_S) -> None:
    """SIGTERM to the process's group, SIGKILL to it after `grace` seconds; reaps the leader."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # the group's id is the leader's pid (start_new_session)
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # what the leader left behind in its group
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    cmd: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """`cmd` in a new process group, its output in `log`; the group is stopped on the way out."""
    with log.open("w") as out:
        process = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_group(process)


def wait_http(url: str, process: subprocess.Popen[str], log: Path, timeout: float) -> None:
    """Until `url` answers 200, while `process` lives, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise PeerError(
                f"{log.stem} process exited {process.returncode} before {url} answered:\n{tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=HTTP_POLL_S * 4) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise PeerError(f"{url} did not answer within {timeout:g} s; log {log}:\n{tail(log)}")
        time.sleep(HTTP_POLL_S)


def run_echoing(
    cmd: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    timeout: float,
    echo: Callable[[str], None],
    prefix: str,
) -> str:
    """Run `cmd` to its end (its group killed after `timeout` s); its stdout.

    Its stderr goes to `log`, and the lines that start with `prefix` (its progress) to `echo` too.
    """
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        stop_group(process, 2.0)

    with log.open("w") as err_log:
        process = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            stdout = _drain(process, err_log, echo, prefix)
        finally:
            timer.cancel()
            stop_group(process, 2.0)
    if expired.is_set():
        raise PeerError(
            f"{' '.join(cmd[:3])}… still running after {timeout:g} s, stopped; log {log}:\n{tail(log)}"
        )
    if process.returncode != 0:
        raise PeerError(f"{' '.join(cmd[:3])}… failed (exit {process.returncode}); log {log}:\n{tail(log)}")
    return stdout


def _drain(process: subprocess.Popen[str], err_log: TextIO, echo: Callable[[str], None], prefix: str) -> str:
    """Read stdout in a thread and stderr here, so that neither pipe fills up."""
    stdout, stderr = process.stdout, process.stderr
    if stdout is None or stderr is None:
        raise PeerError("the process was started without pipes")
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(stdout.read()))
    reader.start()
    for line in stderr:
        err_log.write(line)
        if line.startswith(prefix):
            echo(line.rstrip())
    reader.join()
    process.wait()
    return "".join(chunks)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that `finally` blocks stop what was started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
