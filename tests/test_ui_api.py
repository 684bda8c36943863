"""The web UI over HTTP: a real uvicorn server on a free port, runs made by a real worker.

Filters, cursor pages and counts of the runs list; the JSON shapes; 404s; escaping of names
and values that hold HTML and templates; the password, the token, the refusal to serve on
other addresses without them, the CSRF header and the Host check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from orchestrator import Orchestrator
from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings
from orchestrator.ui.server import ServerThread, check_bind, serve
from tests.conftest import new_run, wait_for, workflow

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]

SCRIPTED = "<script>alert('x')</script> {{ 7*7 }}"
CSRF = {"X-Requested-With": "orchestrator"}


@pytest.fixture(scope="module")
def ui(settings: Settings, orch: Orchestrator) -> Iterator[ServerThread]:
    """The UI without password or token, on 127.0.0.1."""
    with ServerThread(settings, orchestrator=orch) as server:
        yield server


@pytest.fixture
def http(ui: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui.url, timeout=15) as client:
        yield client


def get_json(http: httpx.Client, path: str, expect: int = 200, **params: str) -> Any:
    response = http.get(path, params=params)
    assert response.status_code == expect, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [run["_id"] for run in page["runs"]]


def quick(name: str) -> dict[str, Any]:
    return workflow(name, {"id": "step", "type": "set", "params": {"value": 1}})


@pytest.fixture
def history(orch: Orchestrator) -> dict[str, str]:
    """Runs of three workflows: two of Alpha, a failed Beta, a Parent and its Alpha child."""
    orch.register(quick("Alpha"))
    orch.register(workflow("Beta", {"id": "boom", "type": "fail", "params": {"message": "no data"}}))
    orch.register(
        workflow(
            "Parent", {"id": "call", "type": "run_workflow", "params": {"workflow": "Alpha", "mode": "wait"}}
        )
    )
    runs = {
        "alpha1": orch.run("Alpha", timeout=30).id,
        "alpha2": orch.run("Alpha", timeout=30).id,
        "beta": orch.run("Beta", timeout=30).id,
        "parent": orch.run("Parent", timeout=30).id,
    }
    runs["child"] = f"{runs['parent']}.call"
    assert orch.get_run(runs["beta"]).status == "failed"
    return runs


# -- the runs list ----------------------------------------------------------------------------


def test_runs_api_filters_by_workflow_status_trigger_parent_and_text(
    http: httpx.Client, history: dict[str, str]
) -> None:
    everything = get_json(http, "/api/runs")
    assert set(ids(everything)) == set(history.values()) and everything["next_cursor"] is None
    assert set(ids(get_json(http, "/api/runs", workflow="Alpha"))) == {
        history["alpha1"],
        history["alpha2"],
        history["child"],
    }
    assert ids(get_json(http, "/api/runs", status="failed")) == [history["beta"]]
    assert ids(get_json(http, "/api/runs", trigger="run_workflow")) == [history["child"]]
    assert ids(get_json(http, "/api/runs", parent=history["parent"])) == [history["child"]]
    assert ids(get_json(http, "/api/runs", q=history["beta"][:10])) == [history["beta"]]
    assert ids(get_json(http, "/api/runs", workflow="Alpha", status="failed")) == []


def test_runs_api_filters_by_time(http: httpx.Client, history: dict[str, str]) -> None:
    assert len(ids(get_json(http, "/api/runs", since="2000-01-01"))) == len(history)
    assert ids(get_json(http, "/api/runs", until="2000-01-01T00:00")) == []
    tomorrow = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1).isoformat()
    assert ids(get_json(http, "/api/runs", since=tomorrow)) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "exploded"}, "no run status 'exploded'"),
        ({"since": "yesterday"}, "'since' must be a date"),
        ({"limit": "0"}, "'limit' must be from 1 to 500"),
        ({"limit": "501"}, "'limit' must be from 1 to 500"),
        ({"limit": "ten"}, "'limit' must be a whole number"),
        ({"cursor": "not-a-cursor"}, "is not a cursor of this list"),
    ],
)
def test_bad_filters_are_400_with_the_reason(
    http: httpx.Client, orch: Orchestrator, params: dict[str, str], message: str
) -> None:
    assert message in get_json(http, "/api/runs", 400, **params)["error"]
    page = http.get("/", params=params)
    assert page.status_code == 400 and message in page.text.replace("&#39;", "'")


def seconds_apart(orch: Orchestrator, workflow_name: str, count: int, step: timedelta) -> list[str]:
    """`count` runs stored straight in MongoDB, created `step` apart (the newest now); their
    ids, newest first."""
    now = datetime.now(UTC)
    made = [new_run(orch.store, workflow=workflow_name, created_at=now - i * step) for i in range(count)]
    return made


def walk_pages(http: httpx.Client, limit: int, **filters: str) -> tuple[list[str], int]:
    """Every run id the API lists, following `next_cursor`; and how many pages it took."""
    seen: list[str] = []
    pages, cursor = 0, None
    while pages < 50:
        params = {**filters, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/runs", params=params).json()
        seen += ids(page)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return seen, pages


def test_cursor_pages_walk_every_run_once_newest_first(http: httpx.Client, orch: Orchestrator) -> None:
    made = seconds_apart(orch, "Many", 7, timedelta(seconds=1.5))
    seen, pages = walk_pages(http, 3, workflow="Many")
    assert seen == made and pages == 3


def test_cursor_pages_keep_runs_created_in_the_same_second(http: httpx.Client, orch: Orchestrator) -> None:
    made = seconds_apart(orch, "Burst", 7, timedelta(milliseconds=20))
    seen, _ = walk_pages(http, 3, workflow="Burst")
    assert seen == made


def test_runs_page_links_to_the_next_page_with_the_filters(http: httpx.Client, orch: Orchestrator) -> None:
    made = seconds_apart(orch, "Paged", 3, timedelta(seconds=1.5))
    first = http.get("/", params={"workflow": "Paged", "limit": "2"})
    assert first.status_code == 200
    assert re.findall(r'<tr data-run="([^"]+)"', first.text) == made[:2]
    links = re.findall(r'<a class="next" rel="next" href="([^"]+)"', first.text)
    assert (
        len(links) == 1 and "workflow=Paged" in links[0] and "limit=2" in links[0] and "skip" not in links[0]
    )
    second = http.get(links[0].replace("&amp;", "&"))
    assert second.status_code == 200 and re.findall(r'<tr data-run="([^"]+)"', second.text) == made[2:]
    assert 'rel="next"' not in second.text and 'href="/?workflow=Paged&amp;limit=2">Newest' in second.text


def test_counts_by_status_follow_the_filters_but_not_the_status(
    http: httpx.Client, history: dict[str, str]
) -> None:
    counts = get_json(http, "/api/counts")
    assert counts["counts"]["finished"] == 4 and counts["counts"]["failed"] == 1 and counts["total"] == 5
    assert set(counts["counts"]) == {"pending", "running", "finished", "failed", "error", "cancelled"}
    beta = get_json(http, "/api/counts", workflow="Beta", status="finished")
    assert beta["counts"]["failed"] == 1 and beta["total"] == 1


# -- runs, logs, workflows --------------------------------------------------------------------


def test_run_document_has_nodes_and_children(http: httpx.Client, history: dict[str, str]) -> None:
    parent = get_json(http, f"/api/runs/{history['parent']}")
    assert parent["_id"] == history["parent"] and parent["status"] == "finished"
    assert parent["nodes"]["call"]["status"] == "finished" and parent["nodes"]["call"]["attempts"] == 1
    assert datetime.fromisoformat(parent["created_at"]).tzinfo is not None
    (child,) = parent["children"]
    assert child["_id"] == history["child"] and child["parent_run_id"] == history["parent"]
    assert child["children"] == []
    beta = get_json(http, f"/api/runs/{history['beta']}")
    assert "no data" in beta["nodes"]["boom"]["error"] and beta["children"] == []


def test_logs_api_answers_per_node(http: httpx.Client, history: dict[str, str]) -> None:
    logs = get_json(http, f"/api/runs/{history['beta']}/logs", node="boom")
    assert logs["run_id"] == history["beta"] and logs["node"] == "boom"
    for log in logs["logs"]:
        assert log["node_id"] == "boom" and {"lines", "cut_lines", "attempt"} <= set(log)


def test_unknown_runs_and_workflows_are_404(http: httpx.Client, orch: Orchestrator) -> None:
    for path in ("/api/runs/nope", "/api/runs/nope/logs", "/api/workflows/Nope"):
        assert "'nope'" in get_json(http, path, 404)["error"].lower()
    for path in ("/runs/nope", "/workflows/Nope", "/no/such/page"):
        page = http.get(path)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert get_json(http, "/api/nothing", 404) == {"error": "no such page"}


def test_run_ids_with_url_characters_have_working_links(http: httpx.Client, orch: Orchestrator) -> None:
    orch.register(quick("Odd"))
    run_id = "odd/id?x=1#frag %"
    orch.wait(orch.trigger("Odd", run_id=run_id), timeout=30)
    encoded = "odd%2Fid%3Fx%3D1%23frag%20%25"
    assert get_json(http, f"/api/runs/{encoded}")["_id"] == run_id
    assert http.get(f"/runs/{encoded}").status_code == 200
    assert f'href="/runs/{encoded}"' in http.get("/", params={"workflow": "Odd"}).text


def test_workflows_api_lists_calls_callers_schedule_and_last_run(
    http: httpx.Client, history: dict[str, str], orch: Orchestrator
) -> None:
    loop_body = {"type": "run_workflow", "params": {"workflow": "Beta", "mode": "wait"}}
    orch.register(
        workflow(
            "Looper",
            {"id": "each", "type": "parameter_loop", "params": {"values": [1, 2], "body": loop_body}},
            {"id": "dyn", "type": "run_workflow", "params": {"workflow": "{{ target }}"}},
            variables={"target": "Alpha"},
            schedule={"cron": "30 8 * * *", "timezone": "Europe/Warsaw"},
        )
    )
    listed = {w["name"]: w for w in get_json(http, "/api/workflows")["workflows"]}
    assert sorted(listed) == ["Alpha", "Beta", "Looper", "Parent"]
    assert listed["Parent"]["calls"] == ["Alpha"] and listed["Alpha"]["called_by"] == ["Parent"]
    assert listed["Looper"]["calls"] == ["Beta"] and listed["Beta"]["called_by"] == ["Looper"]
    assert listed["Looper"]["node_count"] == 2 and listed["Alpha"]["schedule"] is None
    firings = [datetime.fromisoformat(t) for t in listed["Looper"]["schedule"]["next"]]
    assert len(firings) == 3 and firings == sorted(firings) and firings[0] > datetime.now(UTC)
    assert all((t.hour, t.minute) == (8, 30) and t.utcoffset() is not None for t in firings)
    assert listed["Beta"]["last_run"]["id"] == history["beta"]
    assert listed["Beta"]["last_run"]["status"] == "failed" and listed["Looper"]["last_run"] is None


def test_workflow_api_has_the_spec_and_recent_runs(http: httpx.Client, history: dict[str, str]) -> None:
    alpha = get_json(http, "/api/workflows/Alpha")
    assert alpha["spec"]["nodes"][0]["id"] == "step" and alpha["called_by"] == ["Parent"]
    assert {r["_id"] for r in alpha["recent_runs"]} == {
        history["alpha1"],
        history["alpha2"],
        history["child"],
    }
    page = http.get("/workflows/Alpha")
    assert (
        page.status_code == 200 and 'data-node="step"' in page.text and 'href="/?workflow=Alpha"' in page.text
    )


# -- escaping ---------------------------------------------------------------------------------


def test_names_and_values_holding_html_and_templates_are_shown_escaped(
    http: httpx.Client, orch: Orchestrator
) -> None:
    name = f'{SCRIPTED} "quoted"'
    orch.register(
        workflow(
            name,
            {"id": "echo", "type": "set", "params": {"said": "{{ note }}"}},
            description="<img src=x onerror=alert(1)>",
            variables={"note": SCRIPTED},
        )
    )
    run = orch.run(name, timeout=30)
    assert run.status == "finished"
    for path in ("/", f"/runs/{run.id}", "/workflows", f"/workflows/{quote(name, safe='')}"):
        html = http.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; {{ 7*7 }}" in html, path
    page = http.get(f"/runs/{run.id}").text
    assert page.count("&lt;script&gt;alert") >= 3  # the name, the variable, the node's output


# -- cancel and re-run ------------------------------------------------------------------------


def test_cancel_stops_a_running_run(http: httpx.Client, orch: Orchestrator) -> None:
    orch.register(workflow("Long", {"id": "nap", "type": "sleep", "params": {"seconds": 60}}))
    run_id = orch.trigger("Long")
    wait_for(lambda: orch.get_run(run_id).nodes["nap"].status == "running", 30, "the node to run")
    answer = http.post(f"/api/runs/{run_id}/cancel", headers=CSRF)
    assert answer.status_code == 200 and answer.json() == {"run_id": run_id, "cancelled": [run_id]}
    assert orch.get_run(run_id).status == "cancelled"
    again = http.post(f"/api/runs/{run_id}/cancel", headers=CSRF)
    assert again.json()["cancelled"] == []
    assert http.post("/api/runs/nope/cancel", headers=CSRF).status_code == 404


def test_rerun_starts_a_new_run_linked_to_the_old(http: httpx.Client, history: dict[str, str]) -> None:
    answer = http.post(f"/api/runs/{history['alpha1']}/rerun", headers=CSRF, json={})
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["run_id"]
    assert new_id != history["alpha1"] and answer.json()["rerun_of"] == history["alpha1"]
    assert get_json(http, f"/api/runs/{new_id}")["rerun_of"] == history["alpha1"]
    assert f'href="/runs/{new_id}"' in http.get(f"/runs/{history['alpha1']}").text


def test_delete_removes_a_top_level_run_with_its_children_or_says_why_not(
    http: httpx.Client, orch: Orchestrator, history: dict[str, str]
) -> None:
    child = http.post(f"/api/runs/{history['child']}/delete", headers=CSRF)
    assert child.status_code == 400
    assert f"remove its top-level run '{history['parent']}'" in child.json()["error"]
    answer = http.post(f"/api/runs/{history['parent']}/delete", headers=CSRF)
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"sample": []} == {
        "run_id": history["parent"], "trees": 1, "runs": 2, "node_logs": 0, "wait_records": 1,
        "kept_active": 0, "dry_run": False, "sample": [],
    }  # fmt: skip
    get_json(http, f"/api/runs/{history['parent']}", expect=404)
    get_json(http, f"/api/runs/{history['child']}", expect=404)
    assert http.post(f"/api/runs/{history['parent']}/delete", headers=CSRF).status_code == 404
    assert http.post(f"/api/runs/{history['alpha1']}/delete").status_code == 403  # no CSRF header

    orch.register(workflow("Long", {"id": "nap", "type": "sleep", "params": {"seconds": 60}}))
    running = orch.trigger("Long")
    busy = http.post(f"/api/runs/{running}/delete", headers=CSRF)
    assert busy.status_code == 409 and "cancel it first" in busy.json()["error"]
    orch.cancel(running)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"from_failed": "maybe"}, "'from_failed' must be true or false"),
        ({"from_node": 3}, "'from_node' must be a node id"),
        ({"again": True}, "unknown re-run options: again"),
        ([1], "must be a JSON object"),
    ],
)
def test_rerun_options_are_checked(
    http: httpx.Client, history: dict[str, str], body: Any, message: str
) -> None:
    answer = http.post(f"/api/runs/{history['beta']}/rerun", headers=CSRF, json=body)
    assert answer.status_code == 400 and message in answer.json()["error"]


# -- safety -----------------------------------------------------------------------------------


def test_every_response_has_the_security_headers(http: httpx.Client, orch: Orchestrator) -> None:
    for path in ("/", "/api/runs", "/static/ui.js", "/runs/nope"):
        headers = http.get(path).headers
        assert "default-src 'self'" in headers["content-security-policy"], path
        assert "'unsafe-inline'" not in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


def test_posts_without_the_header_or_from_another_origin_are_refused(
    http: httpx.Client, ui: ServerThread, history: dict[str, str]
) -> None:
    path = f"/api/runs/{history['alpha1']}/cancel"
    bare = http.post(path)
    assert bare.status_code == 403 and "X-Requested-With" in bare.json()["error"]
    form = http.post(path, data={"x": "1"}, headers={"Origin": "https://evil.example"})
    assert form.status_code == 403
    foreign = http.post(path, headers={**CSRF, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]
    own = http.post(path, headers={**CSRF, "Origin": ui.url.rstrip("/")})
    assert own.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8375", "127.0.0.1.evil.example", "0.0.0.0"])
def test_foreign_host_names_are_refused_without_credentials(
    http: httpx.Client, orch: Orchestrator, host: str
) -> None:
    answer = http.get("/api/runs", headers={"Host": host})
    assert answer.status_code == 403 and "localhost" in answer.json()["error"]
    assert http.get("/", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost", "localhost:8375", "127.0.0.1:1", "[::1]:8375", "LOCALHOST"])
def test_local_host_names_are_served(http: httpx.Client, orch: Orchestrator, host: str) -> None:
    assert http.get("/api/runs", headers={"Host": host}).status_code == 200


def test_serving_elsewhere_than_loopback_needs_a_password_or_token(settings: Settings) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ConfigurationError, match="ORCH_UI_PASSWORD") as refused:
            check_bind(settings, host)
        assert "ORCH_UI_TOKEN" in str(refused.value)
    with pytest.raises(ConfigurationError, match="ORCH_UI_PASSWORD"):
        serve(settings, host="0.0.0.0", port=0)
    with pytest.raises(ConfigurationError, match="ORCH_UI_PASSWORD"):
        ServerThread(settings, host="0.0.0.0")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(settings, host)
    check_bind(settings.model_copy(update={"ui_password": SecretStr("pw")}), "0.0.0.0")
    check_bind(settings.model_copy(update={"ui_token": SecretStr("tok")}), "0.0.0.0")


def test_password_is_http_basic_auth_with_any_user_name(settings: Settings, orch: Orchestrator) -> None:
    guarded = settings.model_copy(update={"ui_password": SecretStr("s3cret pw")})
    with ServerThread(guarded, orchestrator=orch) as server, httpx.Client(base_url=server.url) as client:
        refused = client.get("/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/api/runs").json()["error"].startswith("the UI needs its password")
        assert client.get("/", auth=("someone", "wrong")).status_code == 401
        assert client.get("/", auth=("someone", "s3cret pw")).status_code == 200
        assert client.get("/api/runs", auth=("", "s3cret pw")).status_code == 200
        # with credentials, the Host check is left to them: a proxy may use any name
        assert client.get("/", auth=("a", "s3cret pw"), headers={"Host": "ui.example"}).status_code == 200
        bare = client.post("/api/runs/x/cancel", auth=("a", "s3cret pw"))
        assert bare.status_code == 403


def test_token_as_bearer_or_once_in_the_address_then_a_cookie(settings: Settings, orch: Orchestrator) -> None:
    guarded = settings.model_copy(update={"ui_token": SecretStr("tok-123")})
    with ServerThread(guarded, orchestrator=orch) as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/api/runs").status_code == 401
            assert client.get("/", params={"token": "wrong"}).status_code == 401
            bearer = {"Authorization": "Bearer tok-123"}
            assert client.get("/api/runs", headers=bearer).status_code == 200
            assert client.get("/api/runs", headers={"Authorization": "Bearer tok-12"}).status_code == 401
            entry = client.get("/", params={"token": "tok-123", "workflow": "Alpha"})
            assert entry.status_code == 200 and 'content="0;url=/?workflow=Alpha"' in entry.text
            cookie = entry.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "tok-123" not in cookie
            assert client.get("/", params={"workflow": "Alpha"}).status_code == 200  # the cookie
            assert client.post("/api/runs/nope/cancel", headers=CSRF).status_code == 404
        with httpx.Client(base_url=server.url) as stranger:
            stranger.cookies.set("orch_ui", "forged")
            assert stranger.get("/").status_code == 401
