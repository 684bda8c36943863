"""Prefect 3 beside our engine: child-run trigger latency, wait overhead and fan-out, in one run.

The three measures of `bench/run_workflow.py`, as a user of each engine sees them:

1. a parent asks for a child run -> the child's first line of code runs;
2. a parent waits for a child that sleeps 2 s: overhead = the parent's elapsed time - 2 s
   (with, beside it, how much of it is the child's start and how much the parent's wake-up);
3. N fire-and-forget children from one parent, until all are done: wall time.

Ours (`bench/peers/ours.py`): the `run_workflow` node (fire_and_forget, and wait with its
default `poll_interval_s` 1.5 s) on the worker and services of `bench/run_workflow.py`,
timed from the run documents.

Prefect (`bench/peers/prefect_side.py`, under its own venv `bench/peers/.venv-prefect`, made
and filled with `pip install 'prefect>=3,<4'` on first run): a fresh `prefect server start` on
SQLite (its PREFECT_HOME in a temporary folder, on a free port, the UI off) per setting; the
child flow served by `flow.serve()` in a subprocess (one process per flow run, no process
limit: serve's default); parent flows in the measuring process call `run_deployment`
(`timeout=0` fire-and-forget, `timeout=None` to wait). The child writes the time of its first
and last lines to a file named after its flow run. Two settings:

* tuned: `PREFECT_RUNNER_POLL_FREQUENCY=1` for `serve` (Prefect 3's `flow.serve()` has no
  parameter for it; the runner reads this setting) and `run_deployment(..., poll_interval=1)`;
* defaults (`--defaults`, in addition): Prefect's own, a 10 s runner poll and a 5 s poll_interval.

Every process started is in its own process group and stopped on the way out (also on
SIGTERM or Ctrl-C); every wait has a deadline (`--timeout`).

Run it from the repository root (about 6 minutes; 12 with --defaults; --quick about 1.2):

    .venv/bin/python bench/peers/prefect.py [--quick] [--defaults] [--skip-install]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# Run as a script, this folder is sys.path[0], and its prefect.py would stand for the real
# package to anything that imports `prefect`; the package path is the repository's root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.peers import ours  # noqa: E402
from bench.peers.processes import (  # noqa: E402
    PeerError,
    exit_on_sigterm,
    run_echoing,
    running,
    tail,
    wait_http,
)
from bench.peers.report import Figures, table  # noqa: E402
from orchestrator.services.embedded import free_port  # noqa: E402

VENV = HERE / ".venv-prefect"
PYTHON = VENV / "bin" / "python"
SIDE = HERE / "prefect_side.py"
REQUIREMENT = "prefect>=3,<4"
PIP_TIMEOUT_S = 900
SERVER_START_S = 180
QUICK = {"triggers": 3, "waits": 2, "fanout": 20}
FULL = {"triggers": 10, "waits": 5, "fanout": 100}
TUNED_POLL_S = 1


@dataclass(frozen=True)
class Setting:
    """How Prefect is run: the runner's environment and run_deployment's poll interval."""

    name: str
    serve_env: dict[str, str]
    poll_interval: float | None  # None: run_deployment's default


TUNED = Setting("Prefect 3 tuned", {"PREFECT_RUNNER_POLL_FREQUENCY": str(TUNED_POLL_S)}, TUNED_POLL_S)
DEFAULTS = Setting("Prefect 3 defaults", {}, None)


def say(text: str) -> None:
    """Progress, on stderr: the table alone goes to stdout."""
    print(text, file=sys.stderr, flush=True)


# -- Prefect's venv ---------------------------------------------------------------------------


def _check(cmd: list[str], what: str, timeout: float) -> str:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{what}: no answer after {timeout:g} s ({' '.join(cmd)})") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise PeerError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{output}")
    return done.stdout.strip()


def prefect_venv(skip_install: bool) -> str:
    """Prefect's venv, made and filled unless `skip_install`; the Prefect version in it."""
    if skip_install and not PYTHON.exists():
        raise PeerError(f"no venv at {VENV}: run once without --skip-install to make it")
    if not skip_install:
        if not PYTHON.exists():
            base = shutil.which("python3.11") or sys.executable
            say(f"making {VENV} with {base}…")
            _check([base, "-m", "venv", str(VENV)], f"making the venv {VENV}", 300)
        say(f"pip install '{REQUIREMENT}' into {VENV}…")
        _check([str(PYTHON), "-m", "pip", "install", "--quiet", REQUIREMENT],
               f"installing {REQUIREMENT} (PyPI reachable? try: {PYTHON} -m pip install '{REQUIREMENT}')",
               PIP_TIMEOUT_S)  # fmt: skip
    import_check = [str(PYTHON), "-P", "-c", "import prefect; print(prefect.__version__)"]
    return _check(import_check, f"importing prefect from {VENV} (run without --skip-install)", 120)


# -- one Prefect setting: a server, a runner, the measures ------------------------------------


def _prefect_env(home: Path, port: int) -> dict[str, str]:
    """The environment of every Prefect process: none of the caller's PREFECT_* or PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTHONPATH"}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    return env


@contextmanager
def prefect_stack(home: Path, setting: Setting) -> Iterator[dict[str, str]]:
    """A fresh Prefect server on SQLite and the child flow's `serve`; the clients' environment."""
    home.mkdir(parents=True)
    port = free_port()
    env = _prefect_env(home, port)
    server_cmd = [
        str(VENV / "bin" / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    say(f"{setting.name}: prefect server on 127.0.0.1:{port} (SQLite under {home})…")
    with running(server_cmd, env, home, home / "server.log") as server:
        wait_http(f"http://127.0.0.1:{port}/api/health", server, home / "server.log", SERVER_START_S)
        serve_cmd = [str(PYTHON), "-P", str(SIDE), "serve"]
        with running(serve_cmd, env | setting.serve_env, home, home / "serve.log") as serve:
            yield env
            if serve.poll() is not None:
                raise PeerError(f"serve exited {serve.returncode} early:\n{tail(home / 'serve.log')}")


def measure_prefect(home: Path, setting: Setting, args: argparse.Namespace) -> tuple[Figures, str]:
    """The three measures under `setting`; the figures and the Prefect version."""
    with prefect_stack(home, setting) as env:
        cmd = [str(PYTHON), "-P", str(SIDE), "measure", "--out-dir", str(home / "stamps"),
               "--triggers", str(args.triggers), "--waits", str(args.waits), "--fanout", str(args.fanout),
               "--timeout", str(args.timeout)]  # fmt: skip
        if setting.poll_interval is not None:
            cmd += ["--poll-interval", str(setting.poll_interval)]
        whole = args.timeout * 3 + 60 * (args.triggers + args.waits)  # the side's own deadlines come first
        stdout = run_echoing(cmd, env, home, home / "measure.log", whole, say, "  prefect:")
    try:
        doc = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise PeerError(
            f"{setting.name}: no JSON from {SIDE.name} measure; log {home / 'measure.log'}"
        ) from exc
    return Figures.from_json(doc), str(doc["version"])


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `--quick` makes the unset counts small."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 triggers, 2 waits, 20 children")
    parser.add_argument(
        "--defaults", action="store_true", help="also measure Prefect with its default polling"
    )
    parser.add_argument("--skip-install", action="store_true", help=f"use {VENV.name} as it is, no pip")
    parser.add_argument("--triggers", type=int, help="trigger samples per engine (default 10)")
    parser.add_argument("--waits", type=int, help="wait samples per engine (default 5)")
    parser.add_argument("--fanout", type=int, help="fire-and-forget children (default 100)")
    parser.add_argument("--concurrency", type=int, default=2, help="our worker's processes (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per wait (default 600)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.triggers, args.waits, args.fanout, args.concurrency) < 1:
        parser.error("counts must be at least 1")
    return args


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Prefect's venv, ours, then each Prefect setting; the table."""
    version = prefect_venv(args.skip_install)
    say(f"Prefect {version} in {VENV}")
    columns = {"ours": ours.measure(tmp / "ours", args.triggers, args.waits, args.fanout, args.timeout, say,
                                    args.concurrency)}  # fmt: skip
    for setting in (TUNED, DEFAULTS) if args.defaults else (TUNED,):
        figures, version = measure_prefect(tmp / setting.name.replace(" ", "-"), setting, args)
        columns[setting.name] = figures
    print(f"\nChild runs: ours vs Prefect {version} (server on SQLite, flow.serve(), run_deployment)")
    print(f"  ours: run_workflow node, worker prefork x{args.concurrency}; its wait polls every 1.5 s")
    poll = f"PREFECT_RUNNER_POLL_FREQUENCY={TUNED_POLL_S}, run_deployment poll_interval={TUNED_POLL_S}"
    print(f"  {TUNED.name}: {poll}")
    if args.defaults:
        print(f"  {DEFAULTS.name}: runner poll 10 s, run_deployment poll_interval 5 s")
    print(table(columns))


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 0 when it ran, 2 when a peer could not be set up or measured."""
    args = parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="orch-bench-peers-") as tmp:
        (Path(tmp) / "ours").mkdir()
        try:
            run(args, Path(tmp))
        except PeerError as exc:
            say(f"error: {exc}")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
