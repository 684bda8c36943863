"""Node logs: what a node logs while it runs is kept with its run and node (the last 64 KiB
of each attempt), live while it runs, shown by `runs logs [--follow]`; worker log lines name
the run and node."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from click.testing import CliRunner

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.settings import Settings
from orchestrator.store.node_logs import MAX_LOG_BYTES
from tests.conftest import WorkerProcess, wait_for, workflow

SECRET = "sk-live-7f3a9c2e51"

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


def test_a_nodes_log_holds_its_logger_lines_library_warnings_and_tracebacks(orch: Orchestrator) -> None:
    orch.register(workflow("Talk", {"id": "talk", "type": "chatty", "params": {"lines": 3}}))
    run = orch.run("Talk", timeout=30)
    assert run.status == "finished"
    [log] = orch.logs(run.id, "talk")
    texts = [line.text for line in log.lines]
    assert texts[:3] == [f"line {i} {'x' * 20}" for i in range(3)]
    assert [line.level for line in log.lines[:3]] == ["INFO"] * 3
    assert (log.lines[3].level, texts[3]) == ("WARNING", "a library warns")
    assert log.lines[4].level == "ERROR"
    assert texts[4].startswith("the last line\nTraceback")
    assert "ValueError: shown with its traceback" in texts[4]
    assert log.done and log.cut_lines == 0 and log.attempt == 1


def test_worker_log_lines_name_the_run_and_node(orch: Orchestrator, worker: WorkerProcess) -> None:
    orch.register(workflow("Talk", {"id": "talk", "type": "chatty", "params": {"lines": 1}}))
    run = orch.run("Talk", timeout=30)
    wait_for(
        lambda: f"run {run.id} node 'talk': a library warns" in worker.log.read_text(),
        what="the warning in the worker log, with its run and node",
    )


def test_a_long_log_keeps_its_last_64_kib_and_counts_the_lines_cut(orch: Orchestrator) -> None:
    params = {"lines": 2000, "width": 100}
    orch.register(workflow("Long", {"id": "talk", "type": "chatty", "params": params}))
    run = orch.run("Long", timeout=30)
    [log] = orch.logs(run.id)
    kept = sum(len(line.text.encode()) for line in log.lines)
    assert kept <= MAX_LOG_BYTES
    assert log.cut_lines > 0
    assert log.cut_lines + len(log.lines) == 2002
    assert log.lines[-3].text.startswith("line 1999 ")
    assert orch.get_run(run.id).status == "finished"


def test_lines_are_readable_while_the_node_runs(orch: Orchestrator) -> None:
    orch.register(
        workflow("Slow", {"id": "talk", "type": "chatty", "params": {"lines": 12, "every_s": 0.25}})
    )
    run_id = orch.trigger("Slow")
    logs = wait_for(lambda: orch.logs(run_id, "talk"), timeout=20, what="the first lines")
    assert not logs[0].done
    assert orch.get_run(run_id).nodes["talk"].status == "running"
    orch.wait(run_id, timeout=30)
    assert orch.logs(run_id, "talk")[0].done


def test_python_node_prints_are_its_log(orch: Orchestrator) -> None:
    code = "print('hello')\nprint('\\x1b[31mred')\nresult = 1"
    orch.register(workflow("Py", {"id": "code", "type": "python", "params": {"code": code}}))
    run = orch.run("Py", timeout=60)
    assert run.status == "finished", run.nodes["code"].error
    [log] = orch.logs(run.id, "code")
    assert [(line.level, line.text) for line in log.lines] == [("PRINT", "hello"), ("PRINT", "\\x1b[31mred")]


def test_each_attempt_has_its_own_log_and_a_silent_node_none(orch: Orchestrator) -> None:
    retried = {"id": "talk", "type": "flaky", "params": {"succeed_on": 2}, "retry": {"max_attempts": 2}}
    orch.register(workflow("Retry", retried, {"id": "quiet", "type": "set", "params": {"x": 1}}))
    run = orch.run("Retry", timeout=30)
    assert run.status == "finished"
    logs = orch.logs(run.id)
    assert [(log.node_id, log.attempt, log.lines[0].text) for log in logs] == [
        ("talk", 1, "attempt 1"),
        ("talk", 2, "attempt 2"),
    ]


def test_runs_logs_prints_each_line_once_and_follow_ends_with_the_run(
    orch: Orchestrator, cli: CliRunner
) -> None:
    orch.register(workflow("Slow", {"id": "talk", "type": "chatty", "params": {"lines": 8, "every_s": 0.2}}))
    run_id = orch.trigger("Slow")
    started = time.monotonic()
    result = cli.invoke(main, ["runs", "logs", run_id[:12], "--follow"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 1.0  # it followed the run rather than print at once
    lines = result.output.splitlines()
    for index in range(8):
        assert sum(f"line {index} " in line for line in lines) == 1, result.output
    assert sum("a library warns" in line for line in lines) == 1
    assert orch.get_run(run_id).is_over


def test_runs_logs_of_one_node_and_as_json(orch: Orchestrator, cli: CliRunner) -> None:
    orch.register(
        workflow(
            "Two",
            {"id": "one", "type": "chatty", "params": {"lines": 1}},
            {"id": "two", "type": "chatty", "params": {"lines": 2}, "after": ["one"]},
        )
    )
    run = orch.run("Two", timeout=30)
    result = cli.invoke(main, ["runs", "logs", run.id, "two", "--json"], catch_exceptions=False)
    assert [log["node_id"] for log in json.loads(result.output)] == ["two"]
    shown = cli.invoke(main, ["runs", "logs", run.id], catch_exceptions=False).output
    assert "one  " in shown and "two  " in shown
    missing = cli.invoke(main, ["runs", "logs", run.id, "three"])
    assert missing.exit_code == 2
    assert "has no node 'three'" in missing.stderr


@contextmanager
def own_worker(
    settings: Settings, broker: str, *args: str, name: str, env: dict[str, str] | None = None
) -> Iterator[tuple[Orchestrator, WorkerProcess]]:
    """A worker of its own (`args` for its pool and log level), on the empty Redis database
    `broker`, emptied again at the end."""
    own = settings.model_copy(update={"redis_url": broker})
    redis.Redis.from_url(broker).flushdb()
    with Orchestrator(settings=own) as orch:
        worker = WorkerProcess(own, orch, *args, name=name, env=env).wait_ready()
        try:
            yield orch, worker
        finally:
            worker.stop()
            redis.Redis.from_url(broker).flushdb()


@pytest.fixture
def threads_worker(settings: Settings, spare_redis_url: str) -> Iterator[tuple[Orchestrator, WorkerProcess]]:
    """A `threads` pool worker holding a secret, on a broker of its own."""
    args = ("--pool=threads", "--concurrency=4")
    with own_worker(settings, spare_redis_url, *args, name="threads", env={"SHOP_API_KEY": SECRET}) as pair:
        yield pair


def test_nodes_logging_at_once_in_threads_keep_their_own_lines_and_no_secret(
    threads_worker: tuple[Orchestrator, WorkerProcess],
) -> None:
    orch, worker = threads_worker
    orch.register(
        workflow(
            "Pair",
            {"id": "left", "type": "chatty", "params": {"lines": 8, "every_s": 0.05, "width": 1}},
            {"id": "right", "type": "chatty", "params": {"lines": 8, "every_s": 0.05, "width": 2}},
            {"id": "leak", "type": "chatty", "params": {"lines": 0, "say": "{{ word }}"}},
        ),
    )
    run = orch.run("Pair", {"word": SECRET.upper()}, timeout=30)
    assert run.status == "finished"
    for node, width in (("left", 1), ("right", 2)):
        [log] = orch.logs(run.id, node)
        texts = [line.text for line in log.lines[:8]]
        assert texts == [f"line {i} {'x' * width}" for i in range(8)], node
    [leak] = orch.logs(run.id, "leak")
    assert leak.lines[0].text == "saying ***"
    assert SECRET.lower() not in worker.log.read_text().lower()


@pytest.fixture
def info_worker(settings: Settings, spare_redis_url: str) -> Iterator[tuple[Orchestrator, WorkerProcess]]:
    """A worker that logs at INFO (Celery's own task lines), on a broker of its own."""
    args = ("--pool=prefork", "--concurrency=2", "--loglevel=INFO")
    with own_worker(settings, spare_redis_url, *args, name="info") as pair:
        yield pair


def test_celerys_own_lines_name_the_run_and_node_and_a_poll_reads_waiting(
    info_worker: tuple[Orchestrator, WorkerProcess],
) -> None:
    orch, worker = info_worker
    orch.register(workflow("Nap", {"id": "nap", "type": "sleep", "params": {"seconds": 1}}))
    call = {"workflow": "Nap", "mode": "wait", "poll_interval_s": 0.2}
    orch.register(workflow("Caller", {"id": "call", "type": "run_workflow", "params": call}))
    run = orch.run("Caller", timeout=30)
    assert run.status == "finished"
    where = f"(run {run.id}, node 'call')"
    lines = wait_for(
        lambda: [line for line in worker.log.read_text().splitlines() if where in line] or None,
        what="the caller's task lines",
    )
    assert any("] received " + where in line for line in lines), lines
    assert any("waiting: polls again in 0.2 s" in line for line in lines), lines
    assert not [line for line in worker.log.read_text().splitlines() if "Retry in" in line]
    child_line = f"(run {run.id}.call, node 'nap')"
    wait_for(lambda: "succeeded in" in worker.log.read_text() and child_line in worker.log.read_text(),
             what="the child's lines")  # fmt: skip
