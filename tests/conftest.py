"""Real services for the suite, started once per session.

The suite never touches the servers at `REDIS_URL` / `MONGO_URL` (a user's data): it starts
a private `redis-server` and an in-memory `nx-27017` on free ports. Testing against other
servers is opt-in, through `ORCH_TEST_REDIS_URL` / `ORCH_TEST_MONGO_URL`; even then the suite
claims a Redis database that was empty and a MongoDB database of its own, and empties only
those at its end. Workers are real `orchestrator worker` subprocesses (prefork), with the
test node types of tests/plugins.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from orchestrator import Orchestrator
from orchestrator.constants import NODE_LOGS, WAIT_ITEMS, WAITS
from orchestrator.services.embedded import (
    claim_empty_redis_db,
    mongo_answers,
    private_stack,
    redis_answers,
    release_redis_db,
    stop_process,
)
from orchestrator.settings import Settings
from orchestrator.store.models import Run, epoch_ms, new_run_document, new_run_id
from orchestrator.store.run_store import RunStore
from orchestrator.urls import redact

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "tests.plugins"

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """Forget the user's servers: nothing in the suite, nor any process it starts, may reach
    them through the environment."""
    for name in ("REDIS_URL", "MONGO_URL"):
        os.environ.pop(name, None)


def _opted_in(name: str, answers: Callable[[str], bool]) -> str:
    """The server the suite was told to use in `name`, or "" (then a private one is started)."""
    url = os.environ.get(name, "")
    if url and not answers(url):
        pytest.exit(f"{name}={redact(url)} does not answer; unset it to test on private servers", 2)
    return url


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("services")
    redis_url = _opted_in("ORCH_TEST_REDIS_URL", redis_answers)
    mongo_url = _opted_in("ORCH_TEST_MONGO_URL", mongo_answers)
    with private_stack(home, redis_url, mongo_url, "orchestrator_test", in_memory=True) as stack:
        yield stack.redis_url, stack.mongo_url


@pytest.fixture(scope="session")
def spare_redis_url(service_urls: tuple[str, str]) -> Iterator[str]:
    """A second Redis database of the suite's server, empty, for a broker of a test's own;
    emptied at the end of the session."""
    url = claim_empty_redis_db(service_urls[0])
    assert url is not None, "the suite's Redis has no second empty database"
    yield url
    release_redis_db(url)


@pytest.fixture(scope="session")
def settings(service_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    redis_url, mongo_url = service_urls
    return Settings(
        REDIS_URL=redis_url,
        MONGO_URL=mongo_url,
        ORCH_PLUGINS=PLUGINS,
        ORCH_HOME=tmp_path_factory.mktemp("home"),
    )


@functools.cache
def suite_sandbox() -> str:
    """How the suite's workers contain `python` nodes: `bwrap` where bubblewrap runs (CI
    installs it), else `none`, so that a machine without it still runs the suite (the sandbox
    probes of tests/test_python_sandbox.py then skip, saying why)."""
    from workers.python import bwrap_problem

    return "bwrap" if bwrap_problem(shutil.which("bwrap")) is None else "none"


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a worker subprocess of the suite runs with."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=settings.redis_url,
        MONGO_URL=settings.mongo_url,
        ORCH_PLUGINS=PLUGINS,
        ORCH_PYTHON_SANDBOX=suite_sandbox(),
        ORCH_HOME=str(settings.home),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    env.update(extra)
    return env


class WorkerProcess:
    """An `orchestrator worker` subprocess, ready when its node answers a ping."""

    def __init__(
        self,
        settings: Settings,
        orch: Orchestrator,
        *args: str,
        name: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.hostname = f"{name or 'test'}-{uuid.uuid4().hex[:6]}@%h"
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "worker",
            "--loglevel=WARNING",
            f"--hostname={self.hostname}",
            *args,
        ]
        self.log = settings.home / f"{self.hostname.split('@')[0]}.log"
        self.process = subprocess.Popen(
            cmd,
            env=worker_env(settings, **(env or {})),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.orch = orch

    def wait_ready(self, timeout: float = 60) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        prefix = self.hostname.split("@")[0]
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited: {self.log.read_text()[-2000:]}"
            replies = self.orch.app.control.ping(timeout=0.5)
            if any(name.startswith(prefix) for reply in replies for name in reply):
                return self
        raise AssertionError(f"worker not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.process, timeout=40)  # a warm shutdown lets running tasks end

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash or an OOM kill would."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pool = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        for pid in [self.process.pid, *pool]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="session")
def orch(settings: Settings) -> Iterator[Orchestrator]:
    orchestrator = Orchestrator(settings=settings)
    yield orchestrator
    orchestrator.close()


@pytest.fixture(scope="session")
def worker(settings: Settings, orch: Orchestrator) -> Iterator[WorkerProcess]:
    """One shared prefork worker with two processes."""
    process = WorkerProcess(settings, orch, "--pool=prefork", "--concurrency=2", name="shared").wait_ready()
    yield process
    process.stop()


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, orch: Orchestrator) -> CliRunner:
    """A runner of the `orchestrator` command on the suite's servers (and its test node types)."""
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("MONGO_URL", settings.mongo_url)
    monkeypatch.setenv("ORCH_PLUGINS", PLUGINS)
    return CliRunner()


@pytest.fixture(autouse=True)
def clean_store(request: pytest.FixtureRequest) -> None:
    if "orch" in request.fixturenames:
        orch: Orchestrator = request.getfixturevalue("orch")
        orch.store.runs.delete_many({})
        orch.store.workflows.delete_many({})
        orch.store.db["test_counts"].delete_many({})
        orch.store.db[NODE_LOGS].delete_many({})
        orch.store.db[WAITS].delete_many({})
        orch.store.db[WAIT_ITEMS].delete_many({})


def wait_for(check: Callable[[], T | None], timeout: float = 20, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def workflow(name: str, *nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A workflow definition as a dict."""
    return {"name": name, "nodes": list(nodes), **extra}


def as_dict(value: object) -> dict[str, Any]:
    """`value` (a run's results, a node's output) as a JSON object; fails the test if it is not one."""
    assert isinstance(value, dict), f"expected an object, got {value!r}"
    return value


def as_list(value: object) -> list[Any]:
    """`value` (a run's results, a node's output) as a JSON list; fails the test if it is not one."""
    assert isinstance(value, list), f"expected a list, got {value!r}"
    return value


def output_of(run: Run, node_id: str) -> dict[str, Any]:
    """The output of node `node_id` of `run`, a JSON object; fails the test if it is not one."""
    return as_dict(run.nodes[node_id].output)


def not_none(value: T | None) -> T:
    """`value` (a timestamp of a run, a document found); fails the test if it is None."""
    assert value is not None, "expected a value, got None"
    return value


def new_run(
    store: RunStore,
    nodes: tuple[str, ...] = ("a", "b"),
    *,
    run_id: str | None = None,
    workflow: str = "W",
    variables: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    **lineage: Any,
) -> str:
    """Insert a new `pending` run document straight into the store (no canvas sent); its id."""
    run_id = run_id or new_run_id()
    doc = new_run_document(run_id=run_id, workflow=workflow, node_ids=list(nodes), variables=variables or {},
                           trigger={"type": "api"}, **lineage)  # fmt: skip
    if created_at:
        doc |= {"created_at": created_at, "created_ms": epoch_ms(created_at)}
    store.create_run(doc)
    return run_id
