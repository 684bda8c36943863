"""The screenshots of docs/ui.md: a run page (graph, a failed node's panel with its error and
logs, the lineage) and the runs list, taken from a real stack.

Starts a private Redis and nx-27017 and one worker, registers two small workflows (a
report that calls a child workflow, loops over symbols, branches, and has a node that fails),
runs them, serves the UI from a thread and has Debian's chromium (through Playwright) take
the pictures.

    .venv/bin/python bench/ui_screenshot.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.api import Orchestrator
from orchestrator.services.embedded import start_mongo, start_redis
from orchestrator.services.processes import stop_process
from orchestrator.settings import Settings
from orchestrator.ui.server import ServerThread

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

FETCH: dict[str, Any] = {
    "name": "Fetch Prices",
    "description": "Prices of one symbol (a stand-in: it sleeps and answers)",
    "variables": {"symbol": "BTCUSD"},
    "nodes": [
        {"id": "download", "type": "sleep", "params": {"seconds": 0.4, "output": [101.5, 103.2, 99.8]}},
        {
            "id": "clean",
            "type": "set",
            "after": ["download"],
            "params": {"prices": "{{ nodes.download.output.output }}"},
        },
    ],
    "output": "{{ nodes.clean.output.prices }}",
}
REPORT: dict[str, Any] = {
    "name": "Daily Report",
    "description": "Fetch prices, check them, scan every symbol, notify",
    "variables": {"symbol": "BTCUSD", "symbols": ["BTCUSD", "ETHUSD", "SOLUSD"]},
    "schedule": {"cron": "0 8 * * 1-5", "timezone": "Europe/Warsaw"},
    "nodes": [
        {"id": "fetch", "type": "run_workflow", "params": {"workflow": "Fetch Prices", "mode": "wait",
                                                            "variables": {"symbol": "{{ symbol }}"}}},
        {"id": "scan", "type": "parameter_loop", "params": {
            "values": "{{ symbols }}", "max_parallel": 2,
            "body": {"type": "sleep", "params": {"seconds": 0.3, "output": "{{ loop_value }}"}}}},
        {"id": "check", "type": "condition", "after": ["fetch"],
         "params": {"if": "{{ nodes.fetch.output.targetResults | length > 2 }}"}},
        {"id": "summarize", "type": "set", "after": ["check.yes", "scan"],
         "params": {"last": "{{ nodes.fetch.output.targetResults[-1] }}",
                    "scanned": "{{ nodes.scan.output }}"}},
        {"id": "skip_note", "type": "set", "after": ["check.no"], "params": {"note": "too few prices"}},
        {"id": "notify", "type": "python", "after": ["summarize"], "params": {"code": (
            "import logging\n"
            "log = logging.getLogger('notify')\n"
            "print('sending the summary to the chat')\n"
            "raise ConnectionError('the chat service answered 502 Bad Gateway')\n")}},
    ],
}  # fmt: skip


def sandbox() -> str:
    """`bwrap` where bubblewrap works here, else the explicit opt-out (our own code runs)."""
    from workers.python import bwrap_problem

    return "bwrap" if bwrap_problem(shutil.which("bwrap")) is None else "none"


def start_worker(settings: Settings, home: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, REDIS_URL=settings.redis_url, MONGO_URL=settings.mongo_url,
               ORCH_HOME=str(home), ORCH_PYTHON_SANDBOX=sandbox())  # fmt: skip
    cmd = [sys.executable, "-m", "orchestrator.cli", "worker", "--concurrency=4", "--loglevel=WARNING"]
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=(home / "worker.log").open("wb"), stderr=subprocess.STDOUT
    )


def wait_ready(orch: Orchestrator, worker: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit("the worker exited at start")
        if orch.app.control.ping(timeout=0.5):
            return
    raise SystemExit(f"no worker answered within {timeout:g} s")


def shoot(url: str, run_id: str, out: Path) -> None:
    """Take the run page (the failed node's panel open) and the runs list."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, base_url=url.rstrip("/"))
        page.goto(f"/runs/{run_id}")
        page.click('svg.graph g.node[data-node="notify"]')
        page.wait_for_selector(
            '.node-panel[data-panel="notify"] .log-line, .node-panel[data-panel="notify"] .muted'
        )
        page.screenshot(path=str(out / "run-page.png"), full_page=True)
        page.goto("/")
        page.wait_for_selector("#counts a.count")
        page.screenshot(path=str(out / "runs-list.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="the screenshots of docs/ui.md")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-shots-") as tmp:
        home = Path(tmp)
        redis, mongo = start_redis(home), start_mongo(home, database="shots", in_memory=True)
        settings = Settings(REDIS_URL=redis.url, MONGO_URL=mongo.url, ORCH_HOME=home)
        worker = start_worker(settings, home)
        try:
            with Orchestrator(settings=settings) as orch:
                wait_ready(orch, worker)
                orch.register(FETCH)
                orch.register(REPORT)
                orch.run("Fetch Prices", {"symbol": "ETHUSD"}, timeout=60)
                run = orch.run("Daily Report", timeout=120)
                print(f"run {run.id}: {run.status}")
                with ServerThread(settings, orchestrator=orch) as server:
                    shoot(server.url, run.id, args.out)
            print(f"screenshots in {args.out}")
        finally:
            stop_process(worker, timeout=30)
            mongo.stop()
            redis.stop()


if __name__ == "__main__":
    main()
