"""market_data: cleaning, the synthetic and CSV providers, and Twelve Data against a local server.

The Twelve Data tests run the node in this process against an `http.server` that speaks the
documented format (`{"meta", "values", "status": "ok"}`, errors `{"code", "message", "status":
"error"}`); the worker tests use the synthetic and CSV providers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from orchestrator import Orchestrator
from orchestrator.engine.registry import NodeContext
from orchestrator.errors import NodeError
from orchestrator.settings import Settings
from tests.conftest import output_of, workflow
from workers import market_data
from workers.market_data import MarketDataParams, clean_candles, fetch_twelvedata, synthetic_candles

API_KEY = "td-secret-key-0123456789"


def node_context(settings: Settings, node_id: str = "fetch") -> NodeContext:
    """A context for calling a node function in this process (no store needed)."""
    return NodeContext(
        run_id="r1",
        workflow="w",
        node_id=node_id,
        attempt=1,
        variables={},
        outputs={},
        store=None,  # type: ignore[arg-type]
        settings=settings,
    )


def settings_with(**env: Any) -> Settings:
    return Settings(_env_file=None, **env)


# --- cleaning ------------------------------------------------------------------------------


def test_clean_candles_when_rows_are_messy_then_sorted_unique_numeric_and_complete() -> None:
    raw = pd.DataFrame(
        {
            "datetime": ["2024-01-03", "2024-01-01", "2024-01-02", "2024-01-02", "not a date", "2024-01-04"],
            "open": ["3", "1", None, "2.5", "9", "4"],
            "high": ["3", "1", "2", "2.5", "9", "4"],
            "low": ["3", "1", "2", "2.5", "9", "4"],
            "close": ["3", "1", "2", "2.5", "9", "n/a"],
            "volume": ["30", "10", "20", "25", "90", "40"],
        }
    )
    frame, report = clean_candles(raw, "drop")
    records = market_data.candle_records(frame)
    assert [r["datetime"] for r in records] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert records[1] == {
        "datetime": "2024-01-02",
        "open": 2.5,
        "high": 2.5,
        "low": 2.5,
        "close": 2.5,
        "volume": 25.0,
    }
    assert report.duplicates == 1 and report.invalid_datetimes == 1
    assert report.dropped == 2 and report.filled == 0  # the bad date and the row without a close

    filled, report = clean_candles(raw, "ffill")
    assert list(filled["close"]) == [1.0, 2.5, 3.0, 3.0]  # 2024-01-04 takes the previous close
    assert report.filled == 1 and report.dropped == 1
    assert report.as_dict()["missing"] == "forward-filled"


def test_clean_candles_when_volume_is_absent_then_zero_and_said() -> None:
    raw = pd.DataFrame(
        {"datetime": ["2024-01-01 10:00:00"], "open": [1], "high": [1], "low": [1], "close": [1]}
    )
    frame, report = clean_candles(raw)
    assert market_data.candle_records(frame)[0]["datetime"] == "2024-01-01T10:00:00"
    assert frame["volume"].tolist() == [0.0] and report.volume_provided is False


# --- synthetic and default provider --------------------------------------------------------


def test_synthetic_when_same_seed_and_symbol_then_same_candles() -> None:
    end = datetime(2024, 6, 28)
    first = synthetic_candles("AAPL", "1day", 50, 7, end)
    assert first.equals(synthetic_candles("AAPL", "1day", 50, 7, end))
    assert not first.equals(synthetic_candles("AAPL", "1day", 50, 8, end))
    assert not first["close"].equals(synthetic_candles("MSFT", "1day", 50, 7, end)["close"])
    assert first["datetime"].iloc[-1] == "2024-06-28T00:00:00" and len(first) == 50
    assert (first["high"] >= first[["open", "close"]].max(axis=1)).all()
    assert (first["low"] <= first[["open", "close"]].min(axis=1)).all()


def test_default_provider_when_no_key_then_synthetic_and_says_why() -> None:
    out = market_data.run(MarketDataParams(symbol="AAPL", limit=30), node_context(settings_with()))
    assert out["provider"] == "synthetic" and "no TWELVEDATA_API_KEY" in out["provider_reason"]
    assert out["count"] == 30 and out["last"] == "2024-12-31" and out["seed"] == 0
    assert [c["datetime"] for c in out["candles"]] == sorted(c["datetime"] for c in out["candles"])


def test_twelvedata_asked_without_key_fails_naming_the_param() -> None:
    params = MarketDataParams(symbol="AAPL", provider="twelvedata")
    with pytest.raises(NodeError, match="parameter 'provider' is 'twelvedata' but TWELVEDATA_API_KEY"):
        market_data.run(params, node_context(settings_with()))


def test_csv_when_file_is_missing_fails_naming_path(tmp_path: Path) -> None:
    params = MarketDataParams(symbol="X", provider="csv", path="nope.csv")
    with pytest.raises(NodeError, match=r"parameter 'path': no file at 'nope\.csv' in the data directory"):
        market_data.run(params, node_context(settings_with(ORCH_DATA_DIR=str(tmp_path))))


@pytest.mark.parametrize("path", ["/proc/self/environ", "../outside.csv", "/etc/passwd"])
def test_csv_outside_the_data_directory_is_refused_without_reading_it(tmp_path: Path, path: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "outside.csv").write_text("SECRET_TOKEN=abcdef123456\n")
    params = MarketDataParams(symbol="X", provider="csv", path=path)
    with pytest.raises(NodeError, match="is outside the data directory") as info:
        market_data.run(params, node_context(settings_with(ORCH_DATA_DIR=str(tmp_path / "data"))))
    assert "abcdef123456" not in str(info.value)


def test_csv_whose_header_is_not_candles_fails_without_echoing_the_file(tmp_path: Path) -> None:
    (tmp_path / "env.csv").write_text(
        "TWELVEDATA_API_KEY=sk-live-987654,TELEGRAM_BOT_TOKEN=12345:abcdef\n1,2\n"
    )
    params = MarketDataParams(symbol="X", provider="csv", path="env.csv")
    with pytest.raises(NodeError, match="has no column date") as info:
        market_data.run(params, node_context(settings_with(ORCH_DATA_DIR=str(tmp_path))))
    assert "sk-live-987654" not in str(info.value) and "abcdef" not in str(info.value)


# --- Twelve Data against a local server ----------------------------------------------------


class FakeTwelveData(BaseHTTPRequestHandler):
    """Answers `/time_series` the way Twelve Data documents it; `script` holds canned answers
    to hand out first (status, headers, body), for rate limits."""

    requests: list[dict[str, Any]] = []
    script: list[tuple[int, dict[str, str], dict[str, Any]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append({"path": url.path, "query": query, "auth": self.headers.get("Authorization")})
        status, headers, body = self.script.pop(0) if self.script else self.answer(query)
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def answer(self, query: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if self.headers.get("Authorization") != f"apikey {API_KEY}":
            message = "**apikey** parameter is incorrect or not specified."
            return 401, {}, {"code": 401, "message": message, "status": "error"}
        if query["symbol"] != "AAPL":  # Twelve Data answers HTTP 200 with an error body
            message = f"**symbol** not found: {query['symbol']}. Please specify it correctly."
            return 200, {}, {"code": 400, "message": message, "status": "error"}
        return 200, {}, OK_BODY

    def log_message(self, format: str, *args: Any) -> None:
        pass


OK_BODY = {
    "meta": {
        "symbol": "AAPL",
        "interval": "1day",
        "currency": "USD",
        "exchange": "NASDAQ",
        "type": "Common Stock",
    },
    "values": [  # newest first, as Twelve Data sends them; one duplicate, one hole
        {
            "datetime": "2024-01-05",
            "open": "181.99",
            "high": "182.76",
            "low": "180.17",
            "close": "181.18",
            "volume": "62303300",
        },
        {
            "datetime": "2024-01-04",
            "open": "182.15",
            "high": "183.09",
            "low": "180.88",
            "close": "181.91",
            "volume": "71983600",
        },
        {
            "datetime": "2024-01-04",
            "open": "182.15",
            "high": "183.09",
            "low": "180.88",
            "close": "181.91",
            "volume": "71983600",
        },
        {
            "datetime": "2024-01-03",
            "open": "184.22",
            "high": "185.88",
            "low": "183.43",
            "close": None,
            "volume": "58414500",
        },
        {
            "datetime": "2024-01-02",
            "open": "187.15",
            "high": "188.44",
            "low": "183.89",
            "close": "185.64",
            "volume": "82488700",
        },
    ],
    "status": "ok",
}


@pytest.fixture()
def twelvedata() -> Iterator[str]:
    FakeTwelveData.requests, FakeTwelveData.script = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTwelveData)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_twelvedata_when_key_is_set_then_default_provider_with_clean_candles(twelvedata: str) -> None:
    settings = settings_with(TWELVEDATA_API_KEY=API_KEY, TWELVEDATA_URL=twelvedata)
    out = market_data.run(MarketDataParams(symbol="AAPL", limit=5), node_context(settings))
    assert out["provider"] == "twelvedata" and out["provider_reason"] == "TWELVEDATA_API_KEY is configured"
    assert [c["datetime"] for c in out["candles"]] == ["2024-01-02", "2024-01-04", "2024-01-05"]
    assert out["candles"][0] == {
        "datetime": "2024-01-02",
        "open": 187.15,
        "high": 188.44,
        "low": 183.89,
        "close": 185.64,
        "volume": 82488700.0,
    }
    assert out["cleaning"] == {
        "missing": "dropped",
        "dropped": 1,
        "filled": 0,
        "duplicates": 1,
        "invalid_datetimes": 0,
        "volume_provided": True,
    }
    assert out["meta"] == {"currency": "USD", "exchange": "NASDAQ", "type": "Common Stock"}
    (request,) = FakeTwelveData.requests
    assert request["path"] == "/time_series" and request["auth"] == f"apikey {API_KEY}"
    assert request["query"] == {"symbol": "AAPL", "interval": "1day", "outputsize": "5", "format": "JSON"}
    assert API_KEY not in json.dumps(out)


def test_twelvedata_unknown_symbol_fails_naming_symbol_without_the_key(twelvedata: str) -> None:
    settings = settings_with(TWELVEDATA_API_KEY=API_KEY, TWELVEDATA_URL=twelvedata)
    with pytest.raises(NodeError) as caught:
        market_data.run(MarketDataParams(symbol="NOPE"), node_context(settings))
    message = str(caught.value)
    assert "node 'fetch' (market_data)" in message and "parameter 'symbol' = 'NOPE' (400)" in message
    assert "symbol** not found: NOPE" in message and API_KEY not in message


def test_twelvedata_bad_key_fails_naming_the_setting_without_the_key(twelvedata: str) -> None:
    settings = settings_with(TWELVEDATA_API_KEY="wrong-key-987", TWELVEDATA_URL=twelvedata)
    with pytest.raises(NodeError, match=r"refused the API key \(setting TWELVEDATA_API_KEY\), 401") as caught:
        market_data.run(MarketDataParams(symbol="AAPL"), node_context(settings))
    assert "wrong-key-987" not in str(caught.value)


def test_twelvedata_http_429_then_ok_is_retried_after_retry_after(twelvedata: str) -> None:
    limited = {
        "code": 429,
        "message": "You have run out of API credits for the current minute.",
        "status": "error",
    }
    FakeTwelveData.script = [(429, {"Retry-After": "0"}, limited)]
    settings = settings_with(TWELVEDATA_API_KEY=API_KEY, TWELVEDATA_URL=twelvedata)
    out = market_data.run(MarketDataParams(symbol="AAPL"), node_context(settings))
    assert out["count"] == 3 and len(FakeTwelveData.requests) == 2


def test_twelvedata_code_429_in_body_backs_off_then_gives_up(twelvedata: str) -> None:
    limited = {
        "code": 429,
        "message": "You have run out of API credits for the current minute.",
        "status": "error",
    }
    FakeTwelveData.script = [(200, {}, limited)] * 3
    waits: list[float] = []
    body = fetch_twelvedata(twelvedata, API_KEY, "AAPL", "1day", 5, backoff_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0] and body["status"] == "ok"  # exponential backoff, 4th try answered

    FakeTwelveData.script = [(200, {}, limited)] * 3
    with pytest.raises(NodeError, match=r"still rate-limiting \(429\) after 3 attempts"):
        fetch_twelvedata(twelvedata, API_KEY, "AAPL", "1day", 5, retries=2, backoff_s=0.5, sleep=waits.append)


# --- on a real worker ----------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_worker_runs_synthetic_and_csv_providers(orch: Orchestrator, settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the worker reads files only there
    path = settings.data_dir / "prices.csv"
    path.write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2024-03-04,10,11,9,10.5,100\n"
        "2024-03-01,9,10,8,9.5,90\n"
        "2024-03-05,10.5,12,10,,110\n"
        "2024-03-04,10,11,9,10.5,100\n"
    )
    spec = workflow(
        "Market Data",
        {
            "id": "walk",
            "type": "market_data",
            "params": {"symbol": "{{ symbol }}", "provider": "synthetic", "limit": 40, "seed": 3},
        },
        {
            "id": "file",
            "type": "market_data",
            "params": {"symbol": "{{ symbol }}", "provider": "csv", "path": "prices.csv"},
        },
        variables={"symbol": "ACME"},
    )
    orch.register(spec)
    run = orch.run("Market Data", timeout=60)
    assert run.status == "finished", run.error
    walk, file = output_of(run, "walk"), output_of(run, "file")
    expected = market_data.candle_records(
        clean_candles(synthetic_candles("ACME", "1day", 40, 3, datetime(2024, 12, 31)))[0]
    )
    assert walk["candles"] == expected and walk["provider"] == "synthetic"
    assert [c["close"] for c in file["candles"]] == [9.5, 10.5]
    assert file["cleaning"]["dropped"] == 1 and file["cleaning"]["duplicates"] == 1


@pytest.mark.usefixtures("worker")
def test_worker_bad_param_fails_the_node_naming_it(orch: Orchestrator) -> None:
    spec = workflow(
        "Bad Market Data",
        {"id": "fetch", "type": "market_data", "params": {"symbol": "X", "provider": "csv"}},
    )
    orch.register(spec)
    run = orch.run("Bad Market Data", timeout=60)
    assert run.status == "failed"
    assert "parameter 'path' is required with provider 'csv'" in (run.nodes["fetch"].error or "")
