"""Named lists: the store helper, the `user_list` node on a real worker, `orchestrator lists`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from orchestrator import Orchestrator, WorkflowValidationError
from orchestrator.cli import main
from orchestrator.settings import Settings
from orchestrator.store.run_store import connect
from orchestrator.store.user_lists import ITEMS, LISTS, UserLists
from tests.conftest import as_list, output_of, workflow


@pytest.fixture
def lists(orch: Orchestrator) -> Iterator[UserLists]:
    orch.store.db[LISTS].delete_many({})
    orch.store.db[ITEMS].delete_many({})
    yield UserLists(orch.store.db)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- the store helper ---------------------------------------------------------------------


def test_items_keep_their_order_and_shape(lists: UserLists) -> None:
    assert lists.append("watch", {"symbol": "BTC", "tags": ["a", {"b": 1}]}) == 1
    assert lists.extend("watch", ["ETH", 3, None, [1, 2]]) == 5
    assert lists.read("watch") == [{"symbol": "BTC", "tags": ["a", {"b": 1}]}, "ETH", 3, None, [1, 2]]
    assert lists.clear("watch") == 5
    assert lists.read("watch") == [] and lists.exists("watch")
    assert lists.append("watch", "again") == 1 and lists.read("watch") == ["again"]
    assert lists.read("never") == [] and not lists.exists("never")


def test_a_write_repeated_with_its_key_adds_nothing(lists: UserLists) -> None:
    assert lists.extend("watch", ["BTC", "ETH"], key="run-1/add") == 2
    assert lists.extend("watch", ["BTC", "ETH"], key="run-1/add") == 2  # the node delivered again
    assert lists.append("watch", "SOL", key="run-1/one") == 3
    assert lists.append("watch", "SOL", key="run-1/one") == 3
    assert lists.append("watch", "SOL", key="run-2/one") == 4  # another run's node adds its own
    assert lists.read("watch") == ["BTC", "ETH", "SOL", "SOL"]


def test_names_lists_every_list_with_its_count(lists: UserLists) -> None:
    lists.extend("b", [1, 2])
    lists.extend("a", [])
    assert lists.names() == {"a": 0, "b": 2}


def test_twenty_concurrent_appends_lose_nothing(lists: UserLists, settings: Settings) -> None:
    def append(i: int) -> int:
        own = UserLists(connect(settings.mongo_url, lists.items.database.name))  # its own connection
        try:
            return own.append("race", {"i": i})
        finally:
            own.items.database.client.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(append, range(20)))
    assert sorted(item["i"] for item in lists.read("race")) == list(range(20))
    assert lists.count("race") == 20


# -- the node on a real worker ------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_parallel_append_nodes_then_read(orch: Orchestrator) -> None:
    name = unique("alerts")
    appenders = [
        {
            "id": f"add_{i}",
            "type": "user_list",
            "params": {"list": "{{ target }}", "action": "append", "item": i},
        }
        for i in range(20)
    ]
    orch.register(
        workflow(
            "Collect",
            *appenders,
            {
                "id": "more",
                "type": "user_list",
                "params": {"list": "{{ target }}", "action": "extend", "items": [{"n": "x"}, {"n": "y"}]},
            },
            {
                "id": "read",
                "type": "user_list",
                "after": [a["id"] for a in appenders] + ["more"],
                "params": {"list": "{{ target }}", "action": "read"},
            },
            variables={"target": name},
            output="{{ nodes.read.output }}",
        )
    )
    run = orch.run("Collect", timeout=30)
    assert run.status == "finished", run.error
    assert output_of(run, "add_0")["list"] == name
    assert output_of(run, "more")["count"] >= 2
    result = run.results
    assert isinstance(result, dict) and result["list"] == name and result["count"] == 22
    items = as_list(result["items"])
    assert sorted(i for i in items if isinstance(i, int)) == list(range(20))
    assert [i for i in items if isinstance(i, dict)] == [{"n": "x"}, {"n": "y"}]


@pytest.mark.usefixtures("worker")
def test_clear_empties_the_list_and_bad_params_name_the_problem(orch: Orchestrator) -> None:
    name = unique("tmp")
    UserLists(orch.store.db).extend(name, [1, 2, 3])
    literal = {"id": "oops", "type": "user_list", "params": {"list": name, "action": "append"}}
    with pytest.raises(WorkflowValidationError, match="action 'append' needs 'item'"):
        orch.register(workflow("Clear", literal))  # refused at registration: nothing to render
    orch.register(
        workflow(
            "Clear",
            {"id": "wipe", "type": "user_list", "params": {"list": name, "action": "clear"}},
            # a templated value is checked when the node runs, rendered
            {"id": "oops", "type": "user_list", "params": {"list": name, "action": "{{ 'append' }}"}},
        )
    )
    run = orch.run("Clear", timeout=30)
    assert run.nodes["wipe"].output == {"list": name, "count": 0, "removed": 3}
    assert run.nodes["oops"].status == "failed"
    assert "node 'oops' (user_list)" in (run.nodes["oops"].error or "")
    assert "action 'append' needs 'item'" in (run.nodes["oops"].error or "")


# -- the command line ---------------------------------------------------------------------


def test_lists_command_shows_names_counts_and_items(
    lists: UserLists, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("MONGO_URL", settings.mongo_url)
    monkeypatch.setenv("ORCH_PLUGINS", "tests.plugins")
    lists.extend("watch", ["BTC", {"symbol": "ETH"}])
    lists.append("other", 1)
    cli = CliRunner()

    listed = cli.invoke(main, ["lists", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0
    assert json.loads(listed.stdout) == [{"list": "other", "count": 1}, {"list": "watch", "count": 2}]
    text = cli.invoke(main, ["lists"], catch_exceptions=False).stdout
    assert "watch  2 items" in text and "other  1 item" in text

    shown = cli.invoke(main, ["lists", "show", "watch", "--json"], catch_exceptions=False)
    assert json.loads(shown.stdout) == {"list": "watch", "items": ["BTC", {"symbol": "ETH"}], "count": 2}
    text = cli.invoke(main, ["lists", "show", "watch"], catch_exceptions=False).stdout
    assert '"BTC"' in text and '{"symbol": "ETH"}' in text

    missing = cli.invoke(main, ["lists", "show", "nope"], catch_exceptions=False)
    assert missing.exit_code == 2 and "no list named 'nope'" in missing.stderr
