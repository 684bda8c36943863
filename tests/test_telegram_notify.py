"""The telegram_notify node against a local Bot API server (a thread speaking `sendMessage`):
in process through the node function for each case, and once on a real worker."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest

from orchestrator import Orchestrator
from orchestrator.engine.factory import create_app
from orchestrator.engine.registry import NodeContext
from orchestrator.errors import NodeError, NodeTimeout
from orchestrator.services.embedded import stop_process
from orchestrator.settings import Settings
from tests.conftest import ROOT, wait_for, worker_env, workflow
from workers.telegram_notify import MAX_MESSAGE_LENGTH, TelegramNotifyParams, run, split_text

TOKEN = "123456:test-token-abcdef"
CHAT = 4242


class FakeBotApi:
    """A Bot API server on 127.0.0.1 that records every request.

    It knows one token and one chat; `script` holds answers to give, in order, before the
    normal ones (e.g. a 429).
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.next_id = 100
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def texts(self) -> list[str]:
        return [r["params"]["text"] for r in self.received]

    def answer(self, token: str, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.received.append({"token": token, "method": method, "params": params, "at": time.monotonic()})
            if token != TOKEN:
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            if method != "sendMessage":
                return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            if self.script:
                return self.script.pop(0)
            if str(params.get("chat_id")) != str(CHAT):
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
            self.next_id += 1
            chat = {"id": CHAT, "type": "private", "first_name": "Test"}
            message = {
                "message_id": self.next_id,
                "chat": chat,
                "date": int(time.time()),
                "text": params["text"],
            }
            return 200, {"ok": True, "result": message}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    params = json.loads(body or "{}")
                else:
                    params = dict(parse_qsl(body))
                _, _, rest = self.path.partition("/bot")
                token, _, method = rest.partition("/")
                status, payload = api.answer(token, method, params)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    api = FakeBotApi()
    api.thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()


def context(token: str | None = TOKEN, api_url: str = "", timeout_s: float | None = None) -> NodeContext:
    settings = Settings(
        TELEGRAM_BOT_TOKEN=token or "",
        TELEGRAM_API_URL=api_url or "http://127.0.0.1:9",
        TELEGRAM_CHAT_ID=str(CHAT),
    )
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s) if timeout_s else None
    return NodeContext(
        run_id="r1",
        workflow="Alerts",
        node_id="notify",
        attempt=1,
        variables={},
        outputs={},
        store=None,  # type: ignore[arg-type]  # the node does not use the store
        settings=settings,
        deadline=deadline,
    )


def send(api: FakeBotApi, token: str = TOKEN, timeout_s: float | None = None, **params: Any) -> Any:
    return run(TelegramNotifyParams.model_validate(params), context(token, api.url, timeout_s))


# -- sending -------------------------------------------------------------------------------


def test_sends_the_text_to_the_configured_chat(bot_api: FakeBotApi) -> None:
    output = send(bot_api, text="BTCUSD crossed <b>65000</b>", parse_mode="HTML")
    assert output == {"sent": True, "chat_id": CHAT, "messages": 1, "message_ids": [101]}
    [request] = bot_api.received
    assert request["token"] == TOKEN and request["method"] == "sendMessage"
    assert request["params"]["text"] == "BTCUSD crossed <b>65000</b>"
    assert request["params"]["chat_id"] == str(CHAT) and request["params"]["parse_mode"] == "HTML"


def test_chat_id_param_overrides_the_setting_and_parse_mode_none_sends_none(bot_api: FakeBotApi) -> None:
    output = send(bot_api, text="plain *text*", chat_id=CHAT, parse_mode="none")
    assert output["sent"] is True
    assert "parse_mode" not in bot_api.received[0]["params"]


def test_a_long_text_goes_as_several_messages_split_at_newlines(bot_api: FakeBotApi) -> None:
    lines = [f"line {i:03d} " + "x" * 50 for i in range(150)]  # ~9 000 characters
    output = send(bot_api, text="\n".join(lines))
    texts = bot_api.texts()
    assert output["messages"] == len(texts) == 3 and output["message_ids"] == [101, 102, 103]
    assert all(len(t) <= MAX_MESSAGE_LENGTH for t in texts)
    assert "\n".join(texts) == "\n".join(lines)  # every cut was at a newline


def test_split_text_falls_back_to_spaces_then_a_hard_cut_and_counts_utf16() -> None:
    assert split_text("short") == ["short"]
    words = " ".join(["word"] * 2000)  # no newline
    pieces = split_text(words)
    assert all(len(p) <= MAX_MESSAGE_LENGTH for p in pieces) and " ".join(pieces) == words
    assert split_text("x" * 5000) == ["x" * 4096, "x" * 904]
    emoji = "\U0001f600" * 3000  # 2 UTF-16 code units each: 6000 units
    assert [len(p) for p in split_text(emoji)] == [2048, 952]


def test_a_429_is_retried_after_the_time_telegram_gives(bot_api: FakeBotApi) -> None:
    bot_api.script.append(
        (
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            },
        )
    )
    output = send(bot_api, text="hello")
    assert output["sent"] is True and output["message_ids"] == [101]
    first, second = bot_api.received
    assert second["params"]["text"] == "hello" and second["at"] - first["at"] >= 0.95


def test_a_429_asking_to_wait_past_the_deadline_fails_the_node(bot_api: FakeBotApi) -> None:
    too_many = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests",
        "parameters": {"retry_after": 30},
    }
    bot_api.script.append((429, too_many))
    with pytest.raises(NodeTimeout, match=r"wait 30 s .*past the node's timeout"):
        send(bot_api, text="hello", timeout_s=5)
    assert len(bot_api.received) == 1


def test_a_rejected_token_is_a_clear_error_that_does_not_show_it(bot_api: FakeBotApi) -> None:
    with pytest.raises(NodeError, match=r"rejected the bot token.*check TELEGRAM_BOT_TOKEN") as failure:
        send(bot_api, token="999:wrong-token", text="hello")
    assert "wrong-token" not in str(failure.value)


def test_an_unknown_chat_is_a_clear_error(bot_api: FakeBotApi) -> None:
    with pytest.raises(NodeError, match=r"chat 7 not found .*TELEGRAM_CHAT_ID"):
        send(bot_api, text="hello", chat_id=7)


def test_a_failure_after_some_messages_says_what_was_sent(bot_api: FakeBotApi) -> None:
    bad = {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    bot_api.script += [(200, _ok(bot_api, "first")), (400, bad)]
    with pytest.raises(NodeError, match=r"1 of 2 messages were sent \(ids \[555\]\)"):
        send(bot_api, text="a" * 4096 + "\n" + "b")


def _ok(api: FakeBotApi, text: str) -> dict[str, Any]:
    return {
        "ok": True,
        "result": {"message_id": 555, "chat": {"id": CHAT, "type": "private"}, "date": 0, "text": text},
    }


def test_without_a_token_the_text_goes_to_the_log_and_nothing_is_sent(
    bot_api: FakeBotApi, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        output = send(bot_api, token="", text="would have been sent")
    assert output == {"sent": False, "reason": "TELEGRAM_BOT_TOKEN is not set"}
    assert bot_api.received == []
    assert "would have been sent" in caplog.text


def test_the_token_stays_out_of_the_logs(bot_api: FakeBotApi, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        send(bot_api, text="hello")
        with pytest.raises(NodeError):
            send(bot_api, text="hello", chat_id=7)
    assert "sendMessage" in caplog.text  # httpx logged the request URL …
    assert TOKEN not in caplog.text  # … without the token


def test_a_token_with_no_chat_anywhere_is_an_error(bot_api: FakeBotApi) -> None:
    ctx = context(TOKEN, bot_api.url)
    ctx = NodeContext(
        **{**ctx.__dict__, "settings": ctx.settings.model_copy(update={"telegram_chat_id": None})}
    )
    with pytest.raises(NodeError, match="give the parameter chat_id or set TELEGRAM_CHAT_ID"):
        run(TelegramNotifyParams(text="hello"), ctx)


# -- on a real worker ----------------------------------------------------------------------


class TelegramWorker:
    """An `orchestrator worker` with the Telegram settings, on a queue of its own (and `celery`)."""

    def __init__(self, settings: Settings, orch: Orchestrator, api: FakeBotApi, queue: str) -> None:
        self.name = f"telegram-{uuid.uuid4().hex[:6]}"
        self.log = settings.home / f"{self.name}.log"
        env = worker_env(
            settings, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=api.url, TELEGRAM_CHAT_ID=str(CHAT)
        )
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "--loglevel=INFO",
        ]
        cmd += [f"--hostname={self.name}@%h", f"--queues={queue},celery"]
        self.process = subprocess.Popen(
            cmd, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.orch = orch

    def wait_ready(self, timeout: float = 60) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, f"worker exited: {self.log.read_text()[-2000:]}"
            replies = self.orch.app.control.ping(timeout=0.5)
            return any(name.startswith(self.name) for reply in replies for name in reply)

        wait_for(answers, timeout, "the telegram worker")


def test_a_workflow_sends_its_rendered_message_from_a_worker(
    settings: Settings, orch: Orchestrator, bot_api: FakeBotApi
) -> None:
    queue = f"telegram-{uuid.uuid4().hex[:6]}"
    app = create_app(settings)  # this test's own app routes the node to the worker with the token
    app.conf.task_routes = {"workers.telegram_notify": {"queue": queue}}
    client = Orchestrator(app=app)
    worker = TelegramWorker(settings, client, bot_api, queue)
    try:
        worker.wait_ready()
        client.register(
            workflow(
                "Alert",
                {
                    "id": "notify",
                    "type": "telegram_notify",
                    "params": {"text": "{{ symbol }} above {{ level }}"},
                },
                variables={"symbol": "BTCUSD", "level": 65000},
            )
        )
        result = client.run("Alert", {"level": 70000}, timeout=30)
        assert result.status == "finished", result.error or result.nodes["notify"].error
        assert result.results == {
            "notify": {"sent": True, "chat_id": CHAT, "messages": 1, "message_ids": [101]}
        }
        assert bot_api.texts() == ["BTCUSD above 70000"]
        assert TOKEN not in worker.log.read_text()
    finally:
        stop_process(worker.process, timeout=20)
        client.close()
