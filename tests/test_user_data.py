"""The test suite never touches a user's data.

A user's Redis and MongoDB (here: servers started for the test, holding a sentinel key, a
sentinel workflow and a sentinel run) are named in `REDIS_URL` / `MONGO_URL`, as "Using it"
tells users to; then a part of the suite that deletes runs and workflows and flushes
brokers runs in a subprocess. The sentinels must survive, whether the suite was left on its
private servers (the default) or pointed at the user's servers with `ORCH_TEST_*_URL`, and
in the second case it must leave nothing of its own behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from pymongo import MongoClient

from orchestrator.services.embedded import Service, start_mongo, start_redis
from orchestrator.urls import with_mongo_database

ROOT = Path(__file__).resolve().parent.parent
# Tests that register workflows, run them on a worker, and clean the store between tests;
# the one-slot test gives itself a second broker database.
SUBSET = [
    "tests/test_api.py",
    "tests/test_run_workflow.py::test_ten_waiting_parents_finish_on_a_single_worker_slot",
]


@dataclass
class UserServers:
    redis_url: str
    mongo_url: str


@pytest.fixture
def user_servers(tmp_path: Path) -> Iterator[UserServers]:
    """A user's Redis (DB 0) and MongoDB (database `orchestrator`), each with a sentinel."""
    started: list[Service] = [start_redis(tmp_path / "user"), start_mongo(tmp_path / "user", in_memory=True)]
    servers = UserServers(started[0].url, started[1].url)
    redis.Redis.from_url(servers.redis_url).set("user:sentinel", "keep me")
    with mongo_client(servers.mongo_url) as client:
        db = client.get_default_database()
        db["workflows"].insert_one({"_id": "Sentinel", "name": "Sentinel", "nodes": []})
        db["runs"].insert_one({"_id": "sentinel-run", "workflow": "Sentinel", "status": "finished",
                               "created_at": datetime.now(UTC)})  # fmt: skip
    try:
        yield servers
    finally:
        for service in reversed(started):
            service.stop()


def mongo_client(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=5000)


def run_subset(env_update: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_TEST_")}
    env.update(env_update)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUBSET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip


def assert_sentinels_kept(servers: UserServers) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    assert client.get("user:sentinel") == b"keep me"
    with mongo_client(servers.mongo_url) as mongo:
        db = mongo.get_default_database()
        assert [d["_id"] for d in db["workflows"].find()] == ["Sentinel"]
        assert [d["_id"] for d in db["runs"].find()] == ["sentinel-run"]


def key_counts(url: str) -> dict[str, int]:
    """How many keys each database of the Redis server at `url` holds (empty ones left out)."""
    keyspace = redis.Redis.from_url(url).info("keyspace")
    return {db: int(info["keys"]) for db, info in keyspace.items()}


@pytest.mark.timeout(300)
def test_suite_with_the_users_urls_set_leaves_their_servers_alone(user_servers: UserServers) -> None:
    done = run_subset({"REDIS_URL": user_servers.redis_url, "MONGO_URL": user_servers.mongo_url})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert_sentinels_kept(user_servers)
    assert key_counts(user_servers.redis_url) == {"db0": 1}  # nothing was added either
    with mongo_client(user_servers.mongo_url) as mongo:
        assert "orchestrator" in mongo.list_database_names()
        assert not any(name.startswith("orchestrator_test") for name in mongo.list_database_names())


@pytest.mark.timeout(300)
def test_suite_told_to_use_the_users_servers_uses_its_own_namespaces_and_removes_them(
    user_servers: UserServers,
) -> None:
    done = run_subset(
        {
            "ORCH_TEST_REDIS_URL": user_servers.redis_url,
            "ORCH_TEST_MONGO_URL": with_mongo_database(user_servers.mongo_url, "ignored"),
        }
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert_sentinels_kept(user_servers)
    assert key_counts(user_servers.redis_url) == {"db0": 1}  # the claimed databases were emptied
    with mongo_client(user_servers.mongo_url) as mongo:
        assert not any(name.startswith("orchestrator_test") for name in mongo.list_database_names())
