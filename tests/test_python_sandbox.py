"""The `python` node's sandbox: code that tries to do harm, run as a python node on a real
worker, and fails to.

Each probe is what the code could do before bubblewrap contained it: read the worker's
secrets through /proc, reach the broker, write where the worker may, fork without end,
outlive its node with `setsid()`, flood the worker with output, forge worker log lines.
The probes run on a worker of their own (a broker database of its own, a fake secret in its
environment, INFO logs); they need a bwrap that runs here, and are skipped, saying why, if
there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from pydantic import ValidationError

from orchestrator import Orchestrator
from orchestrator.engine.registry import NodeContext
from orchestrator.errors import NodeError
from orchestrator.settings import Settings
from orchestrator.store.models import Run
from tests.conftest import PLUGINS, ROOT, WorkerProcess, as_dict, wait_for, workflow
from workers.python import BWRAP_NEEDED, LOG_PREFIX, PythonParams, bwrap_problem
from workers.python import run as run_python

SECRET = "sk-probe-123"


@pytest.fixture(scope="module")
def bwrap() -> str:
    """The bwrap the probes need; skips them, saying why, when it cannot run here."""
    path = shutil.which("bwrap")
    problem = bwrap_problem(path)
    if path is None or problem:
        pytest.skip(f"no usable bubblewrap here ({problem}): `apt-get install bubblewrap`")
    return path


@pytest.fixture(scope="module")
def own(bwrap: str, settings: Settings, spare_redis_url: str) -> Iterator[tuple[Orchestrator, WorkerProcess]]:
    """An orchestrator on a broker database of its own, and its worker, which holds a secret
    in its environment and logs at INFO (what the code prints)."""
    given = {"REDIS_URL": spare_redis_url, "MONGO_URL": settings.mongo_url, "ORCH_PLUGINS": PLUGINS}
    own_settings = Settings.model_validate(given | {"ORCH_HOME": settings.home})
    redis.Redis.from_url(spare_redis_url).flushdb()
    with Orchestrator(settings=own_settings) as orch:
        worker = WorkerProcess(
            own_settings, orch, "--pool=prefork", "--concurrency=2", "--loglevel=INFO",
            name="sandbox", env={"TWELVEDATA_API_KEY": SECRET, "ORCH_PYTHON_SANDBOX": "bwrap"},
        ).wait_ready()  # fmt: skip
        try:
            yield orch, worker
        finally:
            worker.stop()
            redis.Redis.from_url(spare_redis_url).flushdb()


def run_code(orch: Orchestrator, name: str, *nodes: tuple[str, str], **params: Any) -> Run:
    """Run a workflow of python nodes (`(id, code)`, side by side) to its end."""
    specs = [{"id": node_id, "type": "python", "params": {"code": code, **params}} for node_id, code in nodes]
    unique = f"{name} {uuid.uuid4().hex[:6]}"
    orch.register(workflow(unique, *specs))
    return orch.run(unique, timeout=60)


def marker() -> str:
    """A string nobody else has, for file names and command lines."""
    return f"{time.time_ns() % 10**9:09d}"


def processes_named(text: str) -> list[int]:
    """Processes on this host whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def pool_peak_rss_kb(worker: WorkerProcess) -> int:
    """The peak resident size (VmHWM) of the worker's pool processes, added up, in KiB."""
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    total = 0
    for pid in children.read_text().split():
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return total


# -- secrets, network, files --------------------------------------------------------------


def test_the_code_finds_no_worker_environment_in_proc(own: tuple[Orchestrator, WorkerProcess]) -> None:
    orch, worker = own
    pool = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    assert SECRET in Path(f"/proc/{pool[0]}/environ").read_text()  # there is something to find
    code = (
        "import os\n"
        "found = {}\n"
        "for pid in ['self', str(os.getppid()), '1', *(p for p in os.listdir('/proc') if p.isdigit())]:\n"
        "    try:\n"
        "        found[pid] = open(f'/proc/{pid}/environ').read()\n"
        "    except OSError as exc:\n"
        "        found[pid] = type(exc).__name__\n"
        "result = {'found': found, 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit())}\n"
    )
    run = run_code(orch, "Probe Environ", ("env", code))
    assert run.status == "finished", run.error
    seen = json.dumps(run.nodes["env"].output)
    for leak in (SECRET, "TWELVEDATA_API_KEY", "REDIS_URL", "MONGO_URL", "ORCH_HOME", "PATH="):
        assert leak not in seen
    pids = as_dict(run.nodes["env"].output)["pids"]
    assert len(pids) <= 3, pids  # bwrap's init, the code, maybe its own child: not the host's


def test_the_code_cannot_reach_the_suites_redis_nor_mongodb(
    own: tuple[Orchestrator, WorkerProcess], settings: Settings
) -> None:
    orch, _ = own
    servers = [urlsplit(settings.redis_url), urlsplit(settings.mongo_url)]
    addresses = [(url.hostname or "127.0.0.1", url.port or 0) for url in servers]
    for address in addresses:
        socket.create_connection(address, timeout=2).close()  # they answer this process
    code = (
        "import socket\n"
        "result = {}\n"
        f"for host, port in {addresses!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=2).close()\n"
        "        result[f'{host}:{port}'] = 'connected'\n"
        "    except OSError as exc:\n"
        "        result[f'{host}:{port}'] = type(exc).__name__\n"
    )
    run = run_code(orch, "Probe Network", ("net", code))
    assert run.status == "finished", run.error
    outcome = as_dict(run.nodes["net"].output)
    assert len(outcome) == 2 and "connected" not in outcome.values(), outcome


def test_the_code_cannot_read_or_write_outside_its_working_directory(
    own: tuple[Orchestrator, WorkerProcess], settings: Settings
) -> None:
    orch, _ = own
    mark = marker()
    outside = [f"/tmp/orch-probe-{mark}", str(ROOT / f"probe-{mark}"), str(settings.home / f"probe-{mark}")]
    secrets = [str(ROOT / "pyproject.toml"), "/etc/passwd", str(Path.home() / ".bashrc")]
    code = (
        "import os\n"
        "def attempt(action):\n"
        "    try:\n"
        "        action()\n"
        "        return 'done'\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        f"wrote = {{p: attempt(lambda p=p: open(p, 'w').write('x')) for p in {outside!r}}}\n"
        f"read = {{p: attempt(lambda p=p: open(p).read()) for p in {secrets!r}}}\n"
        "here = attempt(lambda: open('mine.txt', 'w').write('x' * 1000))\n"
        "result = {'wrote': wrote, 'read': read, 'here': here, 'cwd': os.getcwd()}\n"
    )
    disk = "open('big', 'wb').write(b'x' * (300 * 1024 * 1024))\n"
    run = run_code(orch, "Probe Files", ("files", code), ("disk", disk), memory_mb=1024)
    outcome = as_dict(run.nodes["files"].output)
    assert outcome["here"] == "done" and outcome["cwd"] == "/sandbox"
    assert "done" not in outcome["wrote"].values(), outcome["wrote"]
    assert "done" not in outcome["read"].values(), outcome["read"]
    assert not any(Path(path).exists() for path in outside)
    assert "OSError: [Errno 28] No space left on device" in (run.nodes["disk"].error or "")


# -- processes ----------------------------------------------------------------------------


def test_a_fork_bomb_is_capped_and_the_worker_stays_healthy(own: tuple[Orchestrator, WorkerProcess]) -> None:
    orch, worker = own
    code = (
        "import os, time\n"
        "started, refused = 0, ''\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(20)\n"
        "            os._exit(0)\n"
        "        started += 1\n"
        "except OSError as exc:\n"
        "    refused = type(exc).__name__\n"
        "result = {'started': started, 'refused': refused}\n"
    )
    run = run_code(orch, "Probe Fork Bomb", ("bomb", code))
    assert run.status == "finished", run.error
    outcome = as_dict(run.nodes["bomb"].output)
    assert outcome["refused"] == "BlockingIOError" and outcome["started"] < 128, outcome

    after = run_code(orch, "Probe After Bomb", ("after", "result = 'ok'"))
    assert after.status == "finished" and after.nodes["after"].output == "ok"
    assert worker.process.poll() is None


def test_a_setsid_child_dies_when_its_node_ends_or_times_out(own: tuple[Orchestrator, WorkerProcess]) -> None:
    orch, _ = own
    ended, stopped = f"300.{marker()}1", f"300.{marker()}2"

    def escape(nap: str, then: str) -> str:
        """Code that starts `sleep <nap>` in a session of its own, waits to see it run, then `then`."""
        return (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    os.execvp('sleep', ['sleep', {nap!r}])\n"
            "def running():\n"
            "    pids = [p for p in os.listdir('/proc') if p.isdigit() and p != str(os.getpid())]\n"
            f"    return any({nap!r} in open(f'/proc/{{p}}/cmdline').read() for p in pids)\n"
            "while not running():\n"
            "    time.sleep(0.01)\n"
        ) + then

    run = run_code(orch, "Probe Setsid", ("escape", escape(ended, "result = 'child started'")))
    assert run.status == "finished" and run.nodes["escape"].output == "child started", run.error
    wait_for(lambda: processes_named(ended) == [], timeout=5, what="the setsid child to die with its node")

    params = {"code": escape(stopped, "time.sleep(60)"), "timeout_s": 3}
    orch.register(workflow("Probe Setsid Timeout", {"id": "escape", "type": "python", "params": params}))
    run_id = orch.trigger("Probe Setsid Timeout")
    wait_for(lambda: processes_named(stopped), what="the setsid child to start")

    def over() -> Run | None:
        run = orch.get_run(run_id)
        return run if run.is_over else None

    timed_out = wait_for(over, timeout=30, what="the node's timeout")
    assert "ran past 3 s" in (timed_out.nodes["escape"].error or "")
    wait_for(lambda: processes_named(stopped) == [], timeout=5, what="the setsid child to die at the timeout")


# -- output -------------------------------------------------------------------------------


def test_printing_or_replying_100_mb_fails_the_node_and_the_worker_does_not_grow(
    own: tuple[Orchestrator, WorkerProcess],
) -> None:
    orch, worker = own
    before = pool_peak_rss_kb(worker)
    prints = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1024 * 1024))\n"
    replies = (  # straight into the reply pipe, which the runner keeps for `result`
        "import os\n"
        "def target(fd):\n"
        "    return os.readlink(f'/proc/self/fd/{fd}')\n"
        "fds = [fd for fd in range(3, 64) if os.path.exists(f'/proc/self/fd/{fd}')\n"
        "       and target(fd).startswith('pipe:') and target(fd) != target(2)]\n"
        "for _ in range(100):\n"
        "    os.write(fds[0], b'x' * (1024 * 1024))\n"
    )
    run = run_code(orch, "Probe Output", ("prints", prints), ("replies", replies), memory_mb=1024)
    assert run.nodes["prints"].error == (
        "node 'prints' (python): the code printed over 8 MiB, the most a python node may print; "
        "it was stopped"
    )
    assert run.nodes["replies"].error == (
        "node 'replies' (python): the code's reply (`result` as JSON) is over 8 MiB, the most a python "
        "node may return; it was stopped"
    )
    grown_mb = (pool_peak_rss_kb(worker) - before) / 1024
    assert grown_mb < 64, f"the pool processes' peak RSS grew by {grown_mb:.0f} MB"
    assert worker.process.poll() is None


def test_a_printed_line_that_looks_like_a_worker_log_line_reaches_the_log_only_prefixed(
    own: tuple[Orchestrator, WorkerProcess],
) -> None:
    orch, worker = own
    mark = marker()
    forged = f"[2030-01-01 00:00:00,000: ERROR/MainProcess] forged {mark}"
    code = (
        f"print({forged!r})\n"
        f"print('text\\r' + {forged!r})\n"
        f"print('\\x1b[2K\\x1b[1G' + {forged!r}, end='')\n"
        "result = 'printed'\n"
    )
    run = run_code(orch, "Probe Log", ("forge", code))
    assert run.status == "finished", run.error
    lines = wait_for(
        lambda: [line for line in worker.log.read_text().split("\n") if mark in line] or None,
        what="the printed lines in the worker log",
    )
    assert len(lines) == 3, lines
    assert all(line.startswith(LOG_PREFIX) for line in lines), lines
    assert f"{LOG_PREFIX}\\x1b[2K\\x1b[1G[2030-01-01" in lines[2]
    assert "\x1b" not in worker.log.read_text()


# -- the setting --------------------------------------------------------------------------


def context(sandbox: str) -> NodeContext:
    """A node's context, as the worker makes it, with ORCH_PYTHON_SANDBOX=`sandbox`."""
    settings = Settings(ORCH_PYTHON_SANDBOX=sandbox)
    fields: dict[str, Any] = {"run_id": "r1", "workflow": "W", "node_id": "py", "attempt": 1}
    fields |= {"variables": {}, "outputs": {}, "store": None, "settings": settings}
    return NodeContext(**fields)


def test_bwrap_problem_says_why_a_bwrap_cannot_be_used() -> None:
    assert bwrap_problem(None) == "no `bwrap` on PATH"
    assert bwrap_problem("/nonexistent/bwrap").startswith("/nonexistent/bwrap: [Errno 2]")
    assert bwrap_problem("/bin/false") == "/bin/false failed: exit code 1"


def test_with_bwrap_asked_and_none_on_path_the_node_fails_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NodeError) as raised:
        run_python(PythonParams(code="result = 1"), context("bwrap"))
    assert str(raised.value) == (
        "node 'py' (python): the python node needs bubblewrap (`apt-get install bubblewrap`) to contain "
        "its code; set ORCH_PYTHON_SANDBOX=none to run it uncontained (it then runs as the worker's user, "
        "with its files and network) (no `bwrap` on PATH)"
    )
    assert BWRAP_NEEDED in str(raised.value)


def test_with_sandbox_none_the_code_runs_uncontained_and_its_output_is_still_capped() -> None:
    code = (
        "import os\nresult = {'uid': os.getuid(), 'env': sorted(os.environ), 'sees_repo': os.path.exists(%r)}"
    )
    outcome = run_python(PythonParams(code=code % str(ROOT)), context("none"))
    assert outcome == {"uid": os.getuid(), "env": ["HOME", "LANG"], "sees_repo": True}
    with pytest.raises(NodeError, match="the code printed over 8 MiB"):
        run_python(PythonParams(code="print('x' * (20 * 1024 * 1024))"), context("none"))


def test_memory_mb_is_at_most_4096() -> None:
    assert PythonParams(code="pass", memory_mb=4096).memory_mb == 4096
    with pytest.raises(ValidationError, match="less than or equal to 4096"):
        PythonParams(code="pass", memory_mb=4097)
