"""The web UI in a real browser (Playwright driving Debian's chromium), runs made by a real worker.

Filtering the runs list, a failed run's graph and node panel (error, logs), the link to a
child run, a live run turning finished without a reload, Cancel, and Re-run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from orchestrator import Orchestrator
from orchestrator.settings import Settings
from orchestrator.ui.server import ServerThread
from tests.conftest import wait_for, workflow

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.usefixtures("worker"),
    pytest.mark.timeout(120),
]
WAIT_MS = 20_000
"""How long the browser waits for something to appear (live updates poll every second)."""


@pytest.fixture(scope="module")
def ui(settings: Settings, orch: Orchestrator) -> Iterator[ServerThread]:
    with ServerThread(settings, orchestrator=orch) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, ui: ServerThread) -> Iterator[Any]:
    """A fresh browser page; any script error or CSP violation on it fails the test."""
    context = browser.new_context(base_url=ui.url.rstrip("/"), viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    assert not problems, problems


def expect(locator: Any) -> Any:
    return sync_api.expect(locator)


def run_link(page: Any, run_id: str) -> Any:
    return page.locator(f'a.run-id[href="/runs/{quote(run_id, safe="")}"]').first


def register_family(orch: Orchestrator) -> None:
    """`UI Parent`: a `python` node that logs and fails, and a run_workflow node waiting for
    `UI Child` (a short sleep)."""
    orch.register(workflow("UI Child", {"id": "nap", "type": "sleep", "params": {"seconds": 0.2}}))
    code = "print('looking for data', flush=True)\nraise ValueError('no data for BTC')"
    orch.register(
        workflow(
            "UI Parent",
            {"id": "fetch", "type": "python", "params": {"code": code}},
            {"id": "child", "type": "run_workflow", "params": {"workflow": "UI Child", "mode": "wait"}},
            {"id": "report", "type": "set", "after": ["fetch"], "params": {"done": True}},
        )
    )


def test_failed_run_shows_its_failed_node_error_logs_and_child(page: Any, orch: Orchestrator) -> None:
    register_family(orch)
    parent = orch.run("UI Parent", timeout=60)
    other = orch.run("UI Child", timeout=30)
    assert parent.status == "failed" and other.status == "finished"
    child_id = f"{parent.id}.child"

    page.goto("/")
    expect(run_link(page, other.id)).to_be_visible()
    page.fill('input[name="workflow"]', "UI Parent")
    page.select_option('select[name="status"]', "failed")
    page.click('button[type="submit"]')
    expect(page).to_have_url(re.compile(r"workflow=UI\+Parent&status=failed"))
    expect(page.locator("tr[data-run]")).to_have_count(1)
    expect(run_link(page, other.id)).to_have_count(0)
    expect(page.locator('#counts a.count[data-status="failed"]')).to_have_text("failed 1")

    run_link(page, parent.id).click()
    expect(page).to_have_url(re.compile(f"/runs/{parent.id}$"))
    fetch = page.locator('svg.graph g.node[data-node="fetch"]')
    expect(fetch).to_have_class(re.compile(r"\bstatus-failed\b"))
    expect(page.locator('svg.graph g.node[data-node="child"]')).to_have_class(
        re.compile(r"\bstatus-finished\b")
    )
    expect(page.locator('svg.graph g.node[data-node="report"]')).to_have_class(
        re.compile(r"\bstatus-skipped\b")
    )
    expect(fetch.locator('[data-field="attempts"]')).to_have_text("1 attempt")

    wait_for(lambda: any(log.lines for log in orch.logs(parent.id, "fetch")), 15, "fetch's log lines")
    fetch.click()
    panel = page.locator('.node-panel[data-panel="fetch"]')
    expect(panel).to_be_visible()
    expect(panel.locator('[data-field="error"]')).to_contain_text("no data for BTC")
    expect(panel).to_contain_text("print('looking for data'")  # the params, as written
    logs = panel.locator('[data-field="logs"]')
    expect(logs).not_to_contain_text("Loading")
    expect(logs.locator(".log-line")).to_contain_text(["looking for data"])

    page.locator(f'[data-field="children"] a[href="/runs/{quote(child_id, safe="")}"]').click()
    expect(page).to_have_url(re.compile(re.escape(f"/runs/{quote(child_id, safe='')}") + "$"))
    expect(page.locator("h1 .run-id")).to_have_text(child_id)
    expect(page.locator(".ancestors")).to_contain_text(parent.id)


def test_live_run_turns_finished_without_a_reload(page: Any, orch: Orchestrator) -> None:
    orch.register(workflow("UI Live", {"id": "nap", "type": "sleep", "params": {"seconds": 3}}))
    run_id = orch.trigger("UI Live")
    wait_for(lambda: orch.get_run(run_id).nodes["nap"].status == "running", 30, "the node to start")
    page.goto(f"/runs/{run_id}")
    nap = page.locator('svg.graph g.node[data-node="nap"]')
    expect(nap).to_have_class(re.compile(r"\bstatus-running\b"))
    page.evaluate("window.notReloaded = true")
    expect(nap).to_have_class(re.compile(r"\bstatus-finished\b"))
    expect(page.locator('[data-field="run-status"] .badge')).to_have_text("finished")
    expect(nap.locator('[data-field="duration"]')).to_contain_text(" s")
    expect(page.locator('[data-action="rerun"]')).to_be_visible()
    expect(page.locator('[data-action="cancel"]')).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True


def test_cancel_ends_a_long_run_cancelled(page: Any, orch: Orchestrator) -> None:
    orch.register(workflow("UI Long", {"id": "nap", "type": "sleep", "params": {"seconds": 120}}))
    run_id = orch.trigger("UI Long")
    wait_for(lambda: orch.get_run(run_id).nodes["nap"].status == "running", 30, "the node to start")
    page.goto(f"/runs/{run_id}")
    page.click('[data-action="cancel"]')
    expect(page.locator('[data-field="run-status"] .badge')).to_have_text("cancelled")
    assert orch.get_run(run_id).status == "cancelled"
    expect(page.locator('[data-action="rerun"]')).to_be_visible()


def test_rerun_opens_the_new_run_linked_to_the_original(page: Any, orch: Orchestrator) -> None:
    register_family(orch)
    original = orch.run("UI Parent", timeout=60)
    page.goto(f"/runs/{original.id}")
    page.click('[data-action="rerun-failed"]')
    page.wait_for_function(
        "id => location.pathname !== '/runs/' + id || document.querySelector('.action-error').textContent",
        arg=original.id,
    )
    expect(page.locator(".rerun-of")).to_contain_text(original.id)
    new_id = page.locator("h1 .run-id").text_content()
    assert new_id and new_id != original.id
    assert orch.get_run(new_id).rerun_of == original.id
    orch.wait(new_id, timeout=60)
    page.goto(f"/runs/{original.id}")
    expect(page.locator(".reruns")).to_contain_text(new_id)


def test_delete_asks_then_removes_the_run_and_its_children(page: Any, orch: Orchestrator) -> None:
    orch.register(workflow("UI Leaf", {"id": "v", "type": "set", "params": {"v": 1}}))
    call = {"id": "call", "type": "run_workflow", "params": {"workflow": "UI Leaf", "mode": "wait"}}
    orch.register(workflow("UI Tree", call))
    run = orch.run("UI Tree", timeout=60)
    page.goto(f"/runs/{run.id}.call")
    expect(page.locator('[data-action="rerun"]')).to_be_visible()
    expect(page.locator('[data-action="delete"]')).to_be_hidden()  # a child goes with its top-level run
    page.goto(f"/runs/{run.id}")
    questions: list[str] = []

    def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss() if len(questions) == 1 else dialog.accept()

    page.on("dialog", answer)
    page.click('[data-action="delete"]')  # dismissed: nothing happens
    wait_for(lambda: questions, 10, "the question")
    assert orch.get_run(run.id).status == "finished"
    page.click('[data-action="delete"]')
    page.wait_for_url(re.compile(r"/$"))
    assert "cannot be undone" in questions[0] and run.id in questions[0]
    assert not orch.store.runs.find_one({"_id": {"$in": [run.id, f"{run.id}.call"]}})


def test_a_token_in_the_address_signs_the_browser_in_with_a_cookie(
    browser: Any, settings: Settings, orch: Orchestrator
) -> None:
    orch.register(workflow("UI Token", {"id": "step", "type": "set", "params": {"x": 1}}))
    run_id = orch.run("UI Token", timeout=30).id
    guarded = settings.model_copy(update={"ui_token": SecretStr("browser-token")})
    with ServerThread(guarded, orchestrator=orch) as server:
        context = browser.new_context(base_url=server.url.rstrip("/"))
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            assert page.goto("/").status == 401
            page.goto("/?token=browser-token&workflow=UI+Token")
            expect(page).to_have_url(re.compile(r"/\?workflow=UI\+Token$"))
            expect(run_link(page, run_id)).to_be_visible()
            expect(page.locator('#counts a.count[data-status="finished"]')).to_have_text("finished 1")
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert cookie["value"] != "browser-token"  # a digest of it
        finally:
            context.close()
