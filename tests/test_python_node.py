"""The `python` node: code of the workflow's author in a subprocess, with limits, on a real worker."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.engine.registry import NodeContext
from orchestrator.errors import NodeError, NodeTimeout
from orchestrator.settings import Settings
from tests.conftest import WorkerProcess, suite_sandbox, workflow
from workers.python import PythonParams, interpret
from workers.python import run as run_python


def context(**fields: Any) -> NodeContext:
    values: dict[str, Any] = {
        "run_id": "r1",
        "workflow": "W",
        "node_id": "py",
        "attempt": 1,
        "variables": {},
        "outputs": {},
        "store": None,
        "settings": Settings(ORCH_PYTHON_SANDBOX=suite_sandbox()),
    }
    return NodeContext(**(values | fields))


# -- in this process: the subprocess protocol ---------------------------------------------


def test_result_survives_prints_and_sees_variables_nodes_and_run() -> None:
    code = (
        "import os, sys\n"
        "print('noise'); sys.stdout.write('{\"ok\": false}'); os.write(1, b'raw bytes')\n"
        "result = {'sum': variables['n'] + sum(nodes['load']['output']), 'run': run['id']}\n"
    )
    ctx = context(variables={"n": 10}, outputs={"load": [1, 2]})
    assert run_python(PythonParams(code=code), ctx) == {"sum": 13, "run": "r1"}


def test_exit_zero_ends_the_code_early_with_its_result() -> None:
    assert run_python(PythonParams(code="result = 1\nexit(0)\nresult = 2"), context()) == 1


def test_a_node_deadline_shorter_than_timeout_s_wins() -> None:
    from datetime import UTC, datetime, timedelta

    ctx = context(deadline=datetime.now(UTC) + timedelta(seconds=0.3))
    with pytest.raises(NodeTimeout, match="its node's timeout_s"):
        run_python(PythonParams(code="while True: pass"), ctx)


def test_a_process_killed_by_a_signal_is_reported_with_a_memory_hint() -> None:
    with pytest.raises(NodeError, match="killed by SIGKILL \\(out of memory\\? memory_mb=64\\)"):
        interpret(b"", -signal.SIGKILL, "", 64, "node 'py' (python)")
    with pytest.raises(
        NodeError, match="exited with code 3 before reporting a result; its last output:\nboom"
    ):
        interpret(b"", 3, "boom", 64, "node 'py' (python)")


# -- on a real worker ---------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_code_runs_without_the_worker_environment(orch: Orchestrator) -> None:
    orch.register(
        workflow(
            "Py Env",
            {"id": "prices", "type": "set", "params": {"p": [3, 1, 2]}},
            {
                "id": "py",
                "type": "python",
                "after": ["prices"],
                "params": {
                    "code": "import os\nresult = {'env': sorted(os.environ), "
                    "'top': max(nodes['prices']['output']['p']) * variables['k']}"
                },
            },
            variables={"k": 2},
            output="{{ nodes.py.output }}",
        )
    )
    run = orch.run("Py Env", timeout=30)
    assert run.status == "finished", run.error
    assert run.results == {"env": ["HOME", "LANG"], "top": 6}  # no REDIS_URL, MONGO_URL, secrets


def test_crash_timeout_memory_and_bad_result_fail_their_node_and_leave_the_worker_healthy(
    orch: Orchestrator, worker: WorkerProcess
) -> None:
    def node(node_id: str, code: str, **params: Any) -> dict[str, Any]:
        return {"id": node_id, "type": "python", "params": {"code": code, **params}}

    orch.register(
        workflow(
            "Py Trouble",
            node("crash", "def check(x):\n    raise ValueError(f'bad value {x}')\n\ncheck(42)\n"),
            node("loop", "while True:\n    pass\n", timeout_s=0.5),
            node("hog", "blob = bytearray(1024 * 1024 * 1024)\n", memory_mb=128),
            node("odd", "result = {1, 2}\n"),
            node("killed", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"),
        )
    )
    run = orch.run("Py Trouble", timeout=30)
    assert run.status == "failed"
    errors = {node_id: state.error or "" for node_id, state in run.nodes.items()}
    assert errors["crash"].startswith("node 'crash' (python): the code raised ValueError: bad value 42\n")
    assert errors["crash"].endswith(
        '  File "<code>", line 2, in check\n'
        "    raise ValueError(f'bad value {x}')\n"
        "ValueError: bad value 42"
    )
    assert (
        errors["loop"]
        == "node 'loop' (python): the code ran past 0.5 s (parameter 'timeout_s') and was stopped"
    )
    assert errors["hog"] == (
        "node 'hog' (python): the code ran out of memory (MemoryError); the limit is memory_mb=128"
    )
    assert errors["odd"].startswith("node 'odd' (python): `result` is not JSON (set: ")
    assert errors["killed"].startswith("node 'killed' (python): the code's process was killed by SIGKILL")

    orch.register(workflow("Py After", {"id": "py", "type": "python", "params": {"code": "result = 'ok'"}}))
    after = orch.run("Py After", timeout=30)
    assert after.status == "finished" and after.nodes["py"].output == "ok"
    assert worker.process.poll() is None
