"""`orchestrator demo` works with nothing running: embedded Redis, MongoDB-wire server and worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_demo_runs_the_trading_pipeline_with_embedded_services(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        MONGO_URL=f"mongodb://127.0.0.1:{free_port()}/orchestrator",
        ORCH_HOME=str(tmp_path / "home"),
    )
    env.pop("ORCH_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "using an embedded redis-server and nx-27017" in done.stderr
    for stage in ("Daily Trading Pipeline", "Fetch All Portfolio Data", "Compute Technical Indicators"):
        assert stage in done.stdout
    assert "Generate Trading Signals" in done.stdout and "Send Daily Report" in done.stdout
    assert " failed " not in done.stdout and "results:" in done.stdout
    assert "# Daily market summary" in done.stdout and "| QQQ |" in done.stdout
    assert (tmp_path / "home" / "mongo").is_dir()  # run documents are kept under ORCH_HOME
