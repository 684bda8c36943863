"""The command line never shows a traceback for the outside world.

A Redis or MongoDB that does not answer is one line that names the URL and what to do, within
2 s, exit 1; any other unexpected error is one line and exit 1, its traceback only with
`--debug`. `-h` is `--help`; output that does not go to a terminal is never cut; a run id may
be given by its start, as git takes a commit's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.services.embedded import free_port
from orchestrator.settings import Settings
from tests.conftest import new_run

ROOT = Path(__file__).resolve().parent.parent
NOBODY = "127.0.0.1:{port}"


def orchestrator_cmd(
    *args: str, redis_url: str, mongo_url: str, columns: int | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `orchestrator ARGS` as a user would; the result and its wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(REDIS_URL=redis_url, MONGO_URL=mongo_url, ORCH_PLUGINS="tests.plugins")
    if columns:
        env["COLUMNS"] = str(columns)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    return done, time.monotonic() - started


def on_suite(settings: Settings, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`orchestrator ARGS` on the suite's servers."""
    return orchestrator_cmd(*args, redis_url=settings.redis_url, mongo_url=settings.mongo_url)


def dead_redis() -> str:
    return f"redis://{NOBODY.format(port=free_port())}/0"


def dead_mongo() -> str:
    return f"mongodb://{NOBODY.format(port=free_port())}/orchestrator"


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "list"),
        ("runs", "show", "abc"),
        ("runs", "cancel", "abc"),
        ("workflows", "list"),
        ("run", "Anything", "--wait"),
        ("lists",),
    ],
)
def test_every_command_with_mongodb_down_says_so_in_one_line_within_2_s(
    args: tuple[str, ...], settings: Settings
) -> None:
    mongo_url = dead_mongo()
    done, took = orchestrator_cmd(*args, redis_url=settings.redis_url, mongo_url=mongo_url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: MongoDB at {mongo_url} did not answer")
    assert "orchestrator standalone" in lines[0] and "MONGO_URL" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert took < 2.0, f"took {took:.2f} s"


@pytest.mark.usefixtures("worker")
def test_run_with_redis_down_says_so_and_stores_no_run(settings: Settings, orch: Orchestrator) -> None:
    orch.register({"name": "Greet", "nodes": [{"id": "a", "type": "set"}]})
    redis_url = dead_redis()
    done, took = orchestrator_cmd("run", "Greet", redis_url=redis_url, mongo_url=settings.mongo_url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert (
        done.stderr.startswith(f"error: Redis at {redis_url} did not answer") and "REDIS_URL" in done.stderr
    )
    assert took < 2.0, f"took {took:.2f} s"
    assert orch.list_runs() == []  # nothing was started that nobody can run


def test_trigger_that_cannot_reach_redis_raises_an_error_that_carries_the_run_id(
    settings: Settings, orch: Orchestrator
) -> None:
    from orchestrator import RunNotSent

    with Orchestrator(redis_url=dead_redis(), mongo_url=settings.mongo_url) as cut_off:
        cut_off.register({"name": "Greet", "nodes": [{"id": "a", "type": "set"}]})
        with pytest.raises(RunNotSent) as info:
            cut_off.trigger("Greet", run_id="my-key")
        assert info.value.run_id == "my-key" and "my-key" in str(info.value)
        assert cut_off.get_run("my-key").status == "pending"  # stored: the sweeper sends it later
        assert cut_off.trigger("Greet", run_id="my-key") == "my-key"  # a retry: the same run, not sent twice
        assert [r.id for r in cut_off.list_runs(workflow="Greet")] == ["my-key"]


def test_an_unexpected_error_is_one_line_and_its_traceback_comes_with_debug(
    settings: Settings, orch: Orchestrator
) -> None:
    orch.store.runs.insert_one({"_id": "broken", "workflow": "W", "status": "exploded"})  # not a Run
    done, _ = on_suite(settings, "runs", "show", "broken")
    assert done.returncode == 1
    assert done.stderr.startswith("error: unexpected ValidationError") and "--debug" in done.stderr
    assert "Traceback" not in done.stderr
    debug, _ = on_suite(settings, "--debug", "runs", "show", "broken")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_dash_h_is_help_and_help_imports_neither_celery_nor_node_types() -> None:
    script = (
        "import sys\nfrom orchestrator.cli import main\n"
        "try:\n    main(['-h'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('celery', 'kombu', 'pandas', 'workers.indicators') if m in sys.modules]\n"
        "print('CODE', code, 'HEAVY', heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "Usage: " in done.stdout and "-h, --help" in done.stdout, done.stderr
    assert "CODE 0 HEAVY []" in done.stdout


def test_runs_show_takes_the_start_of_a_run_id_and_refuses_an_ambiguous_one(
    settings: Settings, orch: Orchestrator
) -> None:
    parent = new_run(orch.store, run_id="a1b2c3d4e5")
    new_run(orch.store, run_id=f"{parent}.child", parent_run_id=parent, parent_node_id="child",
            root_run_id=parent, depth=1)  # fmt: skip
    new_run(orch.store, run_id="a1b2ffff00")
    shown, _ = on_suite(settings, "runs", "show", "a1b2c")  # the parent, not its child
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split()[1] == parent
    ambiguous, _ = on_suite(settings, "runs", "show", "a1b2")
    assert ambiguous.returncode == 2
    assert "a1b2c3d4e5" in ambiguous.stderr and "a1b2ffff00" in ambiguous.stderr


def test_runs_list_not_on_a_terminal_shows_every_id_whole(settings: Settings, orch: Orchestrator) -> None:
    long_id = "r" * 30 + ".a_rather_long_node_name.with_a_loop.12"
    new_run(orch.store, run_id=long_id, workflow="A Workflow With A Long Name " * 3)
    done, _ = orchestrator_cmd(
        "runs", "list", redis_url=settings.redis_url, mongo_url=settings.mongo_url, columns=60
    )
    assert done.returncode == 0, done.stderr
    assert long_id in done.stdout and "A Workflow With A Long Name " * 3 in done.stdout
    assert "…" not in done.stdout


@pytest.mark.usefixtures("worker")
def test_a_name_with_rich_markup_is_shown_as_text_by_every_command(
    settings: Settings, orch: Orchestrator
) -> None:
    name = "x[/bold]y [red]z"
    orch.register({"name": name, "nodes": [{"id": "a", "type": "set"}]})
    for args in (("workflows", "list"), ("run", name, "--wait"), ("runs", "list")):
        done, _ = on_suite(settings, *args)
        assert done.returncode == 0, done.stderr
        assert name in done.stdout
