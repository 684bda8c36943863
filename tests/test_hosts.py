"""Workers on several hosts: a host cut off mid-run leaves its work to the others.

A second host is a network namespace joined to this one by a veth pair; Redis and the
MongoDB-wire server listen on this side's address, a worker runs in the namespace and
another here. Once the remote worker runs nodes, its link is cut: its nodes can neither
renew their leases nor record their ends, and the reconciler hands them to the worker that
is left. Every run must finish, with no node's effect counted twice after the cut.
Skipped, saying why, where namespaces cannot be made (not root, no `ip`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.engine.reconciler import reconcile
from orchestrator.services.embedded import Service, free_port, start_mongo, start_redis
from orchestrator.services.processes import spawn
from orchestrator.settings import Settings
from tests.conftest import PLUGINS, ROOT, wait_for, worker_env, workflow

FAST = {"ORCH_LEASE_S": "3", "ORCH_STALL_S": "2"}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def namespaces_unavailable() -> str | None:
    """Why no network namespace can be made here, or None."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"orch-probe-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
        ip("netns", "delete", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', b'') or exc}"
    return None


@dataclass
class Host:
    """A network namespace reaching this host at `gateway` through a veth pair."""

    name: str
    link: str
    gateway: str

    def cut(self) -> None:
        """Take the link down: the host is cut off, its processes keep running."""
        ip("link", "set", self.link, "down")

    def pids(self) -> list[int]:
        listed = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        )
        return [int(pid) for pid in listed.stdout.split()]


@pytest.fixture
def remote_host() -> Iterator[Host]:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"workers on several hosts: {reason}")
    tag = uuid.uuid4().hex[:6]
    name, link, peer = f"orch-{tag}", f"vo{tag}", f"vi{tag}"
    subnet = 100 + int(tag[:2], 16) % 100
    gateway, address = f"10.{subnet}.7.1", f"10.{subnet}.7.2"
    ip("netns", "add", name)
    try:
        ip("link", "add", link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", name)
        ip("addr", "add", f"{gateway}/30", "dev", link)
        ip("link", "set", link, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{address}/30", "dev", peer)
        ip("netns", "exec", name, "ip", "link", "set", peer, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        host = Host(name, link, gateway)
        yield host
        for pid in host.pids():
            os.kill(pid, signal.SIGKILL)
    finally:
        subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


def start_worker(settings: Settings, name: str, netns: str | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "orchestrator", "worker", "--pool=prefork", "--concurrency=2",
           "--loglevel=WARNING", f"--hostname={name}@%h"]  # fmt: skip
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    with (settings.home / f"{name}.log").open("wb") as log:
        return spawn(cmd, log, env=worker_env(settings, **FAST), cwd=ROOT)  # its own process group


@pytest.mark.timeout(180)
def test_a_host_cut_off_mid_run_leaves_its_nodes_to_the_workers_left(
    remote_host: Host, tmp_path: Path
) -> None:
    services: list[Service] = [
        start_redis(tmp_path, port=free_port(), host=remote_host.gateway),
        start_mongo(tmp_path, database="hosts", in_memory=True, port=free_port(), host=remote_host.gateway),
    ]
    given = {"REDIS_URL": services[0].url, "MONGO_URL": services[1].url, "ORCH_PLUGINS": PLUGINS}
    settings = Settings.model_validate(given | {"ORCH_HOME": str(tmp_path)} | FAST)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with Orchestrator(settings=settings) as orch:
            orch.register(
                workflow(
                    "Spread",
                    {"id": "work", "type": "block", "params": {"seconds": 4}},
                    {"id": "after", "type": "count", "after": ["work"], "params": {"key": "{{ run.id }}"}},
                )
            )
            workers.append(start_worker(settings, "remote", remote_host.name))
            runs = [orch.trigger("Spread") for _ in range(4)]

            def remote_is_running_nodes() -> bool:
                states = [orch.get_run(r).nodes["work"] for r in runs]
                return any(s.status == "running" for s in states)

            wait_for(remote_is_running_nodes, timeout=60, what="the remote worker to run nodes")
            workers.append(start_worker(settings, "local"))
            remote_host.cut()

            def all_over() -> bool:
                reconcile(orch.app)
                return all(orch.get_run(r).is_over for r in runs)

            wait_for(all_over, timeout=120, what="every run to end on the worker left")
            finished = [orch.get_run(r) for r in runs]
            assert [r.status for r in finished] == ["finished"] * 4, [r.error for r in finished]
            counts = {d["_id"]: d["n"] for d in orch.store.db["test_counts"].find()}
            assert counts == {r: 1 for r in runs}  # each run's last node ran once
            taken_over = [r for r in runs if orch.store.get_run_document(r).get("epoch", 0) > 0]
            assert taken_over, "no run was taken over from the host cut off"
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool processes
            worker.wait()
        for service in services:
            service.stop()
