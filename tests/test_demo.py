"""`orchestrator demo` works with nothing running, and leaves nothing in servers it finds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from pymongo import MongoClient

from orchestrator.services.embedded import free_port, start_mongo, start_redis

ROOT = Path(__file__).resolve().parent.parent


def mongo_client(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=5000)


def run_demo(cwd: Path, **env_update: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ORCH_HOME", "ORCH_PLUGINS")}
    env.update(env_update)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo"], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=170,
    )  # fmt: skip


def assert_pipeline_finished(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("Daily Trading Pipeline", "Fetch All Portfolio Data", "Compute Technical Indicators"):
        assert stage in done.stdout
    assert "Generate Trading Signals" in done.stdout and "Send Daily Report" in done.stdout
    assert " failed " not in done.stdout and "results:" in done.stdout
    assert "# Daily market summary" in done.stdout and "| QQQ |" in done.stdout


@pytest.mark.timeout(360)
def test_demo_with_nothing_listening_and_orch_home_unset_runs_cold_and_warm(tmp_path: Path) -> None:
    nothing = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/orchestrator",
    }
    cold = run_demo(tmp_path, **nothing)
    assert_pipeline_finished(cold)
    assert "using an embedded redis-server and nx-27017" in cold.stderr
    assert (tmp_path / ".orchestrator" / "demo" / "mongo").is_dir()  # the relative default, made absolute
    warm = run_demo(tmp_path, **nothing)
    assert_pipeline_finished(warm)


@pytest.mark.timeout(200)
def test_demo_with_servers_running_uses_its_own_namespaces_and_removes_them(tmp_path: Path) -> None:
    servers = [start_redis(tmp_path / "user"), start_mongo(tmp_path / "user", in_memory=True)]
    try:
        redis_url, mongo_url = servers[0].url, servers[1].url
        redis.Redis.from_url(redis_url).set("user:sentinel", "keep me")
        with mongo_client(mongo_url) as client:
            client.get_default_database()["runs"].insert_one({"_id": "sentinel-run"})
        done = run_demo(tmp_path, REDIS_URL=redis_url, MONGO_URL=mongo_url)
        assert_pipeline_finished(done)
        assert "embedded" not in done.stderr and "removed at the end" in done.stderr
        assert redis.Redis.from_url(redis_url).info("keyspace") == {
            "db0": {"keys": 1, "expires": 0, "avg_ttl": 0}
        }
        with mongo_client(mongo_url) as client:
            assert sorted(client.list_database_names()) == ["admin", "orchestrator"]
            assert [d["_id"] for d in client.get_default_database()["runs"].find()] == ["sentinel-run"]
    finally:
        for service in servers:
            service.stop()
