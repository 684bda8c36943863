"""Run history: every list and tree query has an index that serves it with its sort, and
keyset pages neither repeat nor drop a run, whatever the filters and however close in time
runs were created."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import Orchestrator
from orchestrator.store.history import (
    INDEXES,
    NEWEST_FIRST,
    BadFilter,
    RunFilter,
    decode_cursor,
)
from orchestrator.store.models import epoch_ms
from tests.conftest import new_run

EQUALITY_FILTERS = {
    "workflow": "workflow",
    "status": "status",
    "trigger": "trigger.type",
    "parent": "parent_run_id",
}
SORT = [key for key, _ in NEWEST_FIRST]


def served(equality: set[str], sort: list[str]) -> bool:
    """Whether an index's keys are some of the equality fields (all when there is one made for
    them), then the sort: MongoDB walks it in order, with no sort in memory."""
    for keys in INDEXES.values():
        fields = [key for key, _ in keys]
        prefix, rest = fields[: len(fields) - len(sort)], fields[len(fields) - len(sort) :]
        if rest == sort and set(prefix) <= equality and (prefix or not equality):
            return True
    return False


@pytest.mark.parametrize(
    "names",
    [set(c) for n in range(len(EQUALITY_FILTERS) + 1) for c in itertools.combinations(EQUALITY_FILTERS, n)],
)
def test_every_list_filter_is_served_by_an_index_with_its_sort(names: set[str]) -> None:
    equality = {EQUALITY_FILTERS[name] for name in names}
    assert served(equality, SORT), f"no index serves a list filtered by {sorted(names)}"
    values: dict[str, str] = {name: "x" if name != "status" else "failed" for name in names}
    query = RunFilter(**values).query()  # type: ignore[arg-type]
    assert set(query) == equality


@pytest.mark.parametrize(
    ("equality", "sort"),
    [
        ({"parent_run_id"}, SORT),  # a run's children (put in order after: `oldest_first`)
        ({"root_run_id"}, SORT),
        ({"rerun_of"}, ["created_ms"]),
        ({"parent_run_id", "parent_node_id", "status"}, []),  # a loop's iterations, counted by status
    ],
)
def test_every_tree_query_is_served_by_an_index(equality: set[str], sort: list[str]) -> None:
    assert served(equality, sort)


def test_a_trees_runs_of_one_millisecond_come_in_their_ids_numeric_order(orch: Orchestrator) -> None:
    at = datetime(2026, 12, 5, 12, 0, 0, 500000, tzinfo=UTC)
    root = new_run(orch.store, created_at=at - timedelta(milliseconds=1))
    ids = [f"{root}.loop.{index}" for index in (10, 9, 2, 11, 0, 1)]
    for run_id in ids:
        new_run(
            orch.store,
            run_id=run_id,
            created_at=at,
            parent_run_id=root,
            parent_node_id="loop",
            root_run_id=root,
        )
    expected = [f"{root}.loop.{index}" for index in (0, 1, 2, 9, 10, 11)]
    assert [run.id for run in orch.store.children(root)] == expected
    assert [run.id for run in orch.run_tree(root).children] == expected


def test_the_sole_workflow_and_status_pair_has_an_index_of_its_own() -> None:
    assert ["workflow", "status", "created_ms", "_id"] in [[k for k, _ in keys] for keys in INDEXES.values()]


def walk(orch: Orchestrator, where: RunFilter, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = orch.page_runs(where, limit, cursor)
        seen += [run.id for run in page.runs]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the pages never end")


def test_pages_keep_every_run_created_in_one_millisecond_once(orch: Orchestrator) -> None:
    now = datetime.now(UTC)
    made = [new_run(orch.store, workflow="Burst", created_at=now) for _ in range(7)]
    made += [
        new_run(orch.store, workflow="Burst", created_at=now - timedelta(milliseconds=1)) for _ in range(4)
    ]
    new_run(orch.store, workflow="Other", created_at=now)
    for limit in (1, 3, 5, 20):
        seen = walk(orch, RunFilter(workflow="Burst"), limit)
        assert sorted(seen) == sorted(made) and len(seen) == len(set(seen)), limit
    assert walk(orch, RunFilter(workflow="Burst"), 3)[:7] == sorted(made[:7], reverse=True)


def test_time_range_and_id_text_filters_page_together(orch: Orchestrator) -> None:
    now = datetime.now(UTC)
    made = [new_run(orch.store, workflow="Range", created_at=now - timedelta(minutes=i)) for i in range(10)]
    where = RunFilter(
        since=now - timedelta(minutes=5, seconds=30), until=now - timedelta(minutes=1, seconds=30)
    )
    assert walk(orch, where, 2) == made[2:6]
    prefix = made[4][:6]
    assert made[4] in walk(orch, RunFilter(text=prefix), 1)
    assert walk(orch, RunFilter(text=made[4][3:10].upper()), 2) == [made[4]]
    assert walk(orch, RunFilter(text=made[4][3:10]), 2) == [made[4]]


def test_id_text_matches_anywhere_in_the_id_digits_alone_included(orch: Orchestrator) -> None:
    now = datetime.now(UTC)
    ids = ["ab1234cd", "1234ef", "run-x-1234", "Key-AB", "ffff"]
    for n, run_id in enumerate(ids):
        new_run(orch.store, run_id=run_id, workflow="Text", created_at=now - timedelta(seconds=n))
    assert walk(orch, RunFilter(workflow="Text", text="1234"), 2) == ids[:3]
    assert walk(orch, RunFilter(workflow="Text", text="key-ab"), 2) == ["Key-AB"]
    assert walk(orch, RunFilter(workflow="Text", text=" f.*"), 2) == []  # text, not a pattern
    counts = orch.store.count_runs_by_status(RunFilter(workflow="Text", text="1234"))
    assert counts["pending"] == 3 and sum(counts.values()) == 3


def test_a_cursor_holds_the_last_runs_millisecond_and_id(orch: Orchestrator) -> None:
    when = datetime(2026, 12, 5, 12, 0, 0, 123000, tzinfo=UTC)
    ids = [new_run(orch.store, workflow="C", created_at=when) for _ in range(2)]
    page = orch.page_runs(RunFilter(workflow="C"), 1)
    assert page.next_cursor is not None
    assert decode_cursor(page.next_cursor) == (epoch_ms(when), max(ids))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"status": "done"}, "no run status 'done'"), ({"workflow": {"$ne": 1}}, "must be text")],
)
def test_bad_filters_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(BadFilter, match=words):
        RunFilter(**kwargs)  # type: ignore[arg-type]


def test_a_cursor_that_is_not_one_is_refused(orch: Orchestrator) -> None:
    with pytest.raises(BadFilter, match="is not a cursor"):
        orch.page_runs(RunFilter(), 5, "not-a-cursor!")
