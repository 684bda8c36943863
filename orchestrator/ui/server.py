"""Serving the UI with uvicorn: in the foreground (`orchestrator ui`), or from a thread of
this process (`ServerThread`, for `orchestrator standalone` and the test suite).

The UI binds 127.0.0.1 unless told otherwise, and refuses any other address unless a
password or token is set (`ORCH_UI_PASSWORD`, `ORCH_UI_TOKEN`): run history holds variables,
outputs and errors, and the UI can cancel and re-run.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from orchestrator.api import Orchestrator
from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings
from orchestrator.ui.app import build_app
from orchestrator.ui.auth import credentials_of, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8375


def check_bind(settings: Settings, host: str) -> None:
    """Refuse (`ConfigurationError`) to serve on an address other than loopback without a
    password or token."""
    if not is_loopback(host) and not credentials_of(settings).required:
        raise ConfigurationError(
            f"refusing to serve the UI on {host} without a password: anyone who can reach it "
            "could read every run and cancel or re-run them. Set ORCH_UI_PASSWORD (HTTP basic "
            "auth) or ORCH_UI_TOKEN, or serve it on 127.0.0.1 (the default)"
        )


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host:port` (port 0: a free one); `ConfigurationError` when the
    address cannot be had (in use, not of this machine)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve the UI on {host}: {exc} (give another --host)") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot serve the UI on {host}:{port}: {exc.strerror or exc} "
            "(another UI running there? give another --port)"
        ) from exc
    return sock


def make_server(
    settings: Settings,
    *,
    orchestrator: Orchestrator | None = None,
    log_level: str = "warning",
    log_config: bool = True,
) -> uvicorn.Server:
    """A uvicorn server of the UI (not yet running; give it its sockets with `run`)."""
    config = uvicorn.Config(
        build_app(settings, orchestrator=orchestrator),
        log_level=log_level,
        log_config=uvicorn.config.LOGGING_CONFIG if log_config else None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the UI until interrupted (Ctrl-C).

    Raises:
        ConfigurationError: a non-loopback `host` without a password or token, or an
            address that cannot be had.
    """
    check_bind(settings, host)
    sock = listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"orchestrator UI on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops it)", flush=True)
    make_server(settings, log_level="info").run(sockets=[sock])


class ServerThread:
    """The UI served from a daemon thread of this process, on `host` and a port of its own.

    Use as a context manager, or `start()` and `stop()`; `url` is its root (`http://…/`).
    """

    def __init__(
        self,
        settings: Settings,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        orchestrator: Orchestrator | None = None,
    ) -> None:
        check_bind(settings, host)
        self.socket = listen(host, port)
        self.server = make_server(settings, orchestrator=orchestrator, log_config=False)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="orchestrator-ui", daemon=True
        )
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.socket.getsockname()[1]}/"

    def start(self, timeout: float = 15) -> ServerThread:
        """Start serving; returns once the server answers (`ConfigurationError` if it does not)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"the UI did not start at {self.url} within {timeout:g} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop serving and wait for the thread (open connections get `timeout` seconds)."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
