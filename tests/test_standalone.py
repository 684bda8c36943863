"""`orchestrator standalone`: a local stack in one command, on a machine with nothing running.

It starts the embedded Redis and MongoDB-wire server on the ports of `REDIS_URL` / `MONGO_URL`
with their data under `ORCH_HOME`, a worker, beat and Flower; another process reaches it
through the `export` lines it prints; SIGTERM stops every process it started; a restart keeps
the runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orchestrator import Orchestrator
from orchestrator.services.embedded import free_port
from orchestrator.services.processes import stop_process
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    output: Path
    exports: dict[str, str]
    flower_url: str
    flower_auth: tuple[str, str]
    ui_url: str


def processes_of(home: Path) -> list[str]:
    """Every process whose command line or environment names `home` (what the stack left)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(home).encode() in cmdline or f"ORCH_HOME={home}\0".encode() in environ:
            found.append(f"{proc.name}: {cmdline.decode(errors='replace')[:120]}")
    return found


@contextmanager
def standalone(
    home: Path, redis_port: int, mongo_port: int, flower_port: int, ui_port: int
) -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FLOWER_"))}
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        MONGO_URL=f"mongodb://127.0.0.1:{mongo_port}/orchestrator",
        ORCH_HOME=str(home),
    )
    output = home.parent / f"standalone-{flower_port}.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "standalone", f"--flower-port={flower_port}",
             f"--port={ui_port}", "-c", "2"],
            env=env, cwd=home.parent, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def ready() -> str | None:
            assert process.poll() is None, output.read_text()
            text = output.read_text()
            return text if "Ctrl-C stops it all" in text else None

        text = wait_for(ready, timeout=90, what="standalone to be up")
        export = re.search(r"^\s*export (.+)$", text, re.MULTILINE)
        flower = re.search(r"Flower: (http://\S+)\s+\(user (\S+), password (\S+)\)", text)
        ui = re.search(r"Runs \(web UI\): (http://\S+)", text)
        assert export and flower and ui, text
        exports = dict(pair.split("=", 1) for pair in export.group(1).split())
        yield Stack(
            process, output, exports, flower.group(1), (flower.group(2), flower.group(3)), ui.group(1)
        )
    finally:
        stop_process(process, timeout=60)


@pytest.mark.timeout(300)
def test_standalone_serves_other_processes_stops_cleanly_and_keeps_runs_across_a_restart(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    ports = (free_port(), free_port(), free_port(), free_port())
    with standalone(home, *ports) as stack:
        assert stack.exports["REDIS_URL"] == f"redis://127.0.0.1:{ports[0]}/0"
        assert "Registered 29 example workflows" in stack.output.read_text()
        with Orchestrator(redis_url=stack.exports["REDIS_URL"], mongo_url=stack.exports["MONGO_URL"]) as orch:
            run = orch.run("Price Summary", timeout=60)  # an example, run by the stack's worker
            assert run.status == "finished", run.error
        assert httpx.get(f"{stack.flower_url}/api/workers", timeout=10).status_code == 401

        def flower_sees_the_worker() -> bool:
            answer = httpx.get(
                f"{stack.flower_url}/api/workers?refresh=1", auth=stack.flower_auth, timeout=10
            )
            return answer.status_code == 200 and bool(answer.json())

        wait_for(flower_sees_the_worker, timeout=30, what="Flower to list the worker")

        def ui_lists_the_run() -> bool:
            try:
                answer = httpx.get(
                    f"{stack.ui_url}/api/runs", params={"workflow": "Price Summary"}, timeout=10
                )
            except httpx.TransportError:
                return False  # not listening yet
            return answer.status_code == 200 and [r["_id"] for r in answer.json()["runs"]] == [run.id]

        wait_for(ui_lists_the_run, timeout=30, what="the web UI to list the run")
        stack.process.send_signal(signal.SIGTERM)
        assert stack.process.wait(timeout=90) == 0, stack.output.read_text()
    wait_for(lambda: processes_of(home) == [], timeout=10, what=f"no process left: {processes_of(home)}")

    with standalone(home, *ports) as again:  # the same data: the run and the workflows are kept
        assert "Registered" not in again.output.read_text()
        with Orchestrator(redis_url=again.exports["REDIS_URL"], mongo_url=again.exports["MONGO_URL"]) as orch:
            assert orch.get_run(run.id).status == "finished"
            assert orch.run("Price Summary", timeout=60).status == "finished"
        again.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert again.process.wait(timeout=90) == 0
    wait_for(lambda: processes_of(home) == [], timeout=10, what=f"no process left: {processes_of(home)}")
