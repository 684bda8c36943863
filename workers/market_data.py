"""`market_data`: OHLCV candles for one symbol, from Twelve Data, a CSV file or a seeded random walk.

Every provider's rows go through the same cleaning (`clean_candles`), so the nodes after this
one can rely on the shape: candles oldest first, numbers as numbers, one candle per datetime,
no missing values. The output says what the cleaning did and which provider was used and why.

Providers:

- `twelvedata`: the `time_series` endpoint of the Twelve Data HTTP API. The key comes only from
  the settings (`TWELVEDATA_API_KEY`), travels in the `Authorization` header (never in a URL)
  and is scrubbed from every message. Rate-limit answers (HTTP 429 or `code: 429`) are retried
  with exponential backoff a few times (honouring `Retry-After`); an unknown symbol or a
  refused key fails the node with a message naming the parameter or setting.
- `csv`: a file (`path`) with columns date (or datetime), open, high, low, close and
  optionally volume; ISO dates; any row order.
- `synthetic`: a geometric random walk seeded by `seed` and the symbol, on dates ending at
  `end`: the same params always give the same candles, for demos and tests.

Default provider: `twelvedata` when `TWELVEDATA_API_KEY` is configured, else `synthetic`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError

if TYPE_CHECKING:  # imported where used: checking a workflow imports this module, not them
    import httpx
    import pandas as pd

Interval = Literal[
    "1min", "5min", "15min", "30min", "45min", "1h", "2h", "4h", "8h", "1day", "1week", "1month"
]
Provider = Literal["twelvedata", "csv", "synthetic"]

# pandas frequency and length in minutes of each interval (for synthetic dates and volatility).
INTERVALS: dict[str, tuple[str, float]] = {
    "1min": ("1min", 1),
    "5min": ("5min", 5),
    "15min": ("15min", 15),
    "30min": ("30min", 30),
    "45min": ("45min", 45),
    "1h": ("1h", 60),
    "2h": ("2h", 120),
    "4h": ("4h", 240),
    "8h": ("8h", 480),
    "1day": ("1D", 1440),
    "1week": ("7D", 7 * 1440),
    "1month": ("MS", 30 * 1440),
}
PRICE_COLUMNS = ("open", "high", "low", "close")
COLUMNS = (*PRICE_COLUMNS, "volume")
DATE_COLUMNS = ("datetime", "date", "time", "timestamp")
SYNTHETIC_END = "2024-12-31"


class MarketDataParams(BaseModel):
    """Which candles to load, from where, and how to treat rows with missing values."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=40)
    interval: Interval = "1day"
    limit: int = Field(100, ge=1, le=5000, description="the most recent `limit` candles")
    provider: Provider | None = Field(
        None, description="default: twelvedata when TWELVEDATA_API_KEY is set, else synthetic"
    )
    path: str | None = Field(None, min_length=1, description="csv: the file to read")
    seed: int = Field(0, description="synthetic: with the symbol, decides the random walk")
    end: datetime | None = Field(None, description=f"synthetic: last candle's time (default {SYNTHETIC_END})")
    start_price: float = Field(100.0, gt=0, description="synthetic: the price the walk starts from")
    missing: Literal["drop", "ffill"] = Field(
        "drop", description="rows with a missing value: dropped, or forward-filled from earlier rows"
    )


@dataclass(frozen=True)
class Cleaning:
    """What `clean_candles` did, for the output."""

    missing: str
    dropped: int
    filled: int
    duplicates: int
    invalid_datetimes: int
    volume_provided: bool

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "missing": "dropped" if self.missing == "drop" else "forward-filled",
            "dropped": self.dropped,
            "filled": self.filled,
            "duplicates": self.duplicates,
            "invalid_datetimes": self.invalid_datetimes,
            "volume_provided": self.volume_provided,
        }


def run(params: MarketDataParams, context: NodeContext) -> dict[str, Any]:
    """Load the candles from the chosen provider, clean them and return them with a report."""
    provider, reason = choose_provider(params.provider, context)
    extra: dict[str, Any] = {}
    if provider == "twelvedata":
        raw, extra = _load_twelvedata(params, context)
    elif provider == "csv":
        raw = load_csv(_csv_path(params, context), context.node_id)
        extra = {"path": params.path}
    else:
        end = params.end or datetime.fromisoformat(SYNTHETIC_END)
        raw = synthetic_candles(
            params.symbol, params.interval, params.limit, params.seed, end, params.start_price
        )
        extra = {"seed": params.seed, "end": end.isoformat()}
    frame, cleaning = clean_candles(raw, params.missing)
    frame = frame.tail(params.limit)
    if frame.empty:
        raise NodeError(
            f"node '{context.node_id}' (market_data): no usable candles for symbol '{params.symbol}' "
            f"from {provider} (every row had a missing or invalid value)"
        )
    candles = candle_records(frame)
    return {
        "symbol": params.symbol,
        "interval": params.interval,
        "provider": provider,
        "provider_reason": reason,
        "count": len(candles),
        "first": candles[0]["datetime"],
        "last": candles[-1]["datetime"],
        "cleaning": cleaning.as_dict(),
        **extra,
        "candles": candles,
    }


def choose_provider(requested: Provider | None, context: NodeContext) -> tuple[Provider, str]:
    """The provider to use and why: the `provider` param, else whether a Twelve Data key is set."""
    has_key = context.settings.twelvedata_api_key is not None
    if requested is not None:
        if requested == "twelvedata" and not has_key:
            raise NodeError(
                f"node '{context.node_id}' (market_data): parameter 'provider' is 'twelvedata' but "
                "TWELVEDATA_API_KEY is not set (set it in the workers' environment or .env, or use "
                "provider 'csv' or 'synthetic')"
            )
        return requested, "chosen by parameter 'provider'"
    if has_key:
        return "twelvedata", "TWELVEDATA_API_KEY is configured"
    return "synthetic", "no TWELVEDATA_API_KEY configured: seeded synthetic data, not market prices"


# --- cleaning ------------------------------------------------------------------------------


def clean_candles(
    raw: pd.DataFrame, missing: Literal["drop", "ffill"] = "drop"
) -> tuple[pd.DataFrame, Cleaning]:
    """Candles in a standard shape, whatever the source's quirks.

    Takes a frame with a `datetime` column and open/high/low/close (and optionally volume)
    columns of numbers or strings. Returns a frame with those columns: datetimes parsed (ISO 8601;
    offsets converted to UTC), prices as floats, sorted oldest first, one row per datetime (the
    source's last row wins), and rows with a missing value dropped (`missing="drop"`) or filled
    from the previous row (`"ffill"`; volume is filled with 0, not copied). Rows whose datetime
    cannot be parsed are dropped in both cases.
    """
    import pandas as pd

    parsed = pd.to_datetime(raw["datetime"], errors="coerce", utc=True, format="ISO8601")
    frame = pd.DataFrame({"datetime": parsed.dt.tz_convert(None)}, index=raw.index)
    volume_provided = "volume" in raw.columns
    for column in COLUMNS:
        if column in raw.columns:
            frame[column] = pd.to_numeric(raw[column], errors="coerce").astype("float64")
        else:
            frame[column] = 0.0 if column == "volume" else math.nan
    invalid = int(frame["datetime"].isna().sum())
    frame = frame.dropna(subset=["datetime"]).sort_values("datetime", kind="stable")
    duplicated = frame["datetime"].duplicated(keep="last")
    frame = frame.loc[~duplicated]
    frame, dropped, filled = _handle_missing(frame, missing)
    cleaning = Cleaning(
        missing=missing,
        dropped=dropped + invalid,
        filled=filled,
        duplicates=int(duplicated.sum()),
        invalid_datetimes=invalid,
        volume_provided=volume_provided,
    )
    return frame.reset_index(drop=True), cleaning


def _handle_missing(frame: pd.DataFrame, missing: Literal["drop", "ffill"]) -> tuple[pd.DataFrame, int, int]:
    """Drop or fill rows with missing values; returns the frame, rows dropped, rows filled."""
    gaps = frame[list(COLUMNS)].isna().any(axis=1)
    if missing == "ffill":
        frame = frame.assign(volume=frame["volume"].fillna(0.0))
        frame[list(PRICE_COLUMNS)] = frame[list(PRICE_COLUMNS)].ffill()
    kept = frame[list(COLUMNS)].notna().all(axis=1)
    filled = int((gaps & kept).sum())
    return frame.loc[kept], int((~kept).sum()), filled


def candle_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The candles as JSON objects, `datetime` as an ISO string (see `iso_datetimes`)."""
    out = frame[list(COLUMNS)].assign(datetime=iso_datetimes(frame["datetime"]))[["datetime", *COLUMNS]]
    return [{str(k): v for k, v in row.items()} for row in out.to_dict("records")]


def iso_datetimes(values: pd.Series) -> list[str]:
    """ISO strings of datetimes: dates alone (`2024-01-02`) when every time is midnight."""
    import pandas as pd

    stamps = pd.DatetimeIndex(values)
    daily = bool((stamps == stamps.normalize()).all())
    return list(stamps.strftime("%Y-%m-%d" if daily else "%Y-%m-%dT%H:%M:%S"))


# --- providers -----------------------------------------------------------------------------


def synthetic_candles(
    symbol: str, interval: str, limit: int, seed: int, end: datetime, start_price: float = 100.0
) -> pd.DataFrame:
    """A reproducible geometric random walk: the same symbol, seed, interval and end, the same candles.

    Daily volatility is 2% (scaled by the square root of the interval's length), drift slightly
    positive; highs and lows add a random wick around open and close; volume is log-normal.
    """
    import numpy as np
    import pandas as pd

    digest = hashlib.sha256(f"{symbol}|{seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    freq, minutes = INTERVALS[interval]
    vol = 0.02 * math.sqrt(minutes / 1440)
    returns = rng.normal(0.0002 * minutes / 1440, vol, limit)
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([start_price], close[:-1]))
    wicks = np.abs(rng.normal(0.0, vol / 2, (2, limit)))
    dates = pd.date_range(end=pd.Timestamp(end), periods=limit, freq=freq)
    return pd.DataFrame(
        {
            "datetime": dates.strftime("%Y-%m-%dT%H:%M:%S"),
            "open": np.round(open_, 4),
            "high": np.round(np.maximum(open_, close) * (1 + wicks[0]), 4),
            "low": np.round(np.minimum(open_, close) * (1 - wicks[1]), 4),
            "close": np.round(close, 4),
            "volume": np.round(rng.lognormal(13.0, 0.4, limit)),
        }
    )


MAX_CSV_BYTES = 64 * 1024 * 1024


def _csv_path(params: MarketDataParams, context: NodeContext) -> Path:
    """The file to read: under the data directory (`ORCH_DATA_DIR`) and nowhere else, so that a
    workflow cannot make a worker read its own secrets (`/proc/self/environ`) or files."""
    where = f"node '{context.node_id}' (market_data): parameter 'path'"
    if params.path is None:
        raise NodeError(f"{where} is required with provider 'csv'")
    root = context.settings.data_dir
    path = (root / params.path).resolve()  # an absolute path stays as it is; links are followed
    if not path.is_relative_to(root):
        raise NodeError(
            f"{where}: '{params.path}' is outside the data directory {root}: nodes read files only "
            "there (set ORCH_DATA_DIR on the workers to choose it; relative paths start from it)"
        )
    if not path.is_file():
        raise NodeError(f"{where}: no file at '{params.path}' in the data directory {root}")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise NodeError(f"{where}: '{params.path}' is over {MAX_CSV_BYTES // 2**20} MiB")
    return path


def load_csv(path: Path, node_id: str) -> pd.DataFrame:
    """Read a candle CSV: a date or datetime column and open, high, low, close (volume optional)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise NodeError(f"node '{node_id}' (market_data): parameter 'path': no file at '{path}'") from None
    except (OSError, ValueError) as exc:  # the reader's message may quote the file: not shown
        raise NodeError(
            f"node '{node_id}' (market_data): parameter 'path': '{path}' is not a readable CSV "
            f"file ({type(exc).__name__})"
        ) from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    date_column = next((c for c in DATE_COLUMNS if c in frame.columns), None)
    absent = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if date_column is None or absent:
        needed = ([] if date_column else ["date"]) + absent
        raise NodeError(
            f"node '{node_id}' (market_data): parameter 'path': '{path}' has no column "
            f"{', '.join(needed)} (expected a header line date,open,high,low,close[,volume]; "
            f"its header has {len(frame.columns)} columns, not shown: they could be anything)"
        )
    return frame.rename(columns={date_column: "datetime"})


def _load_twelvedata(params: MarketDataParams, context: NodeContext) -> tuple[pd.DataFrame, dict[str, Any]]:
    import pandas as pd

    key = context.settings.twelvedata_api_key
    assert key is not None  # choose_provider checked it
    body = fetch_twelvedata(
        context.settings.twelvedata_url,
        key.get_secret_value(),
        params.symbol,
        params.interval,
        params.limit,
        node_id=context.node_id,
        seconds_left=context.seconds_left,
    )
    meta = body.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    kept = {k: meta[k] for k in ("currency", "exchange", "exchange_timezone", "type") if k in meta}
    return pd.DataFrame(body["values"]), {"meta": kept}


Sleep = Callable[[float], None]


def fetch_twelvedata(
    base_url: str,
    api_key: str,
    symbol: str,
    interval: str,
    limit: int,
    *,
    node_id: str = "market_data",
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 30.0,
    sleep: Sleep = time.sleep,
    seconds_left: Callable[[], float | None] = lambda: None,
) -> dict[str, Any]:
    """The `time_series` answer of Twelve Data, after up to `retries` retries of rate-limit answers.

    Waits `Retry-After` seconds when the server says so, else `backoff_s * 2**n`; never past the
    node's deadline. Every other error becomes a `NodeError` naming the parameter or setting at
    fault; the key never appears in a message (it is sent in a header, and scrubbed anyway).
    """
    import httpx

    url = base_url.rstrip("/") + "/time_series"
    query = {"symbol": symbol, "interval": interval, "outputsize": str(limit), "format": "JSON"}
    headers = {"Authorization": f"apikey {api_key}"}
    where = f"node '{node_id}' (market_data): twelvedata"
    with httpx.Client(timeout=timeout_s) as client:
        for attempt in range(retries + 1):
            try:
                response = client.get(url, params=query, headers=headers)
            except httpx.HTTPError as exc:
                detail = _scrub(f"{type(exc).__name__}: {exc}", api_key)
                raise NodeError(f"{where} could not be reached at {base_url} ({detail})") from None
            code, message, body = _answer(response)
            if code != 429:
                break
            if attempt == retries:
                raise NodeError(
                    f"{where} is still rate-limiting (429) after {retries + 1} attempts: "
                    f"{_scrub(message, api_key)}; run less often, or add `retry:` to the node"
                )
            delay = _retry_after(response, backoff_s * 2**attempt)
            _check_time_left(delay, seconds_left, where)
            sleep(delay)
    if code == 200 and isinstance(body.get("values"), list) and body["values"]:
        return body
    raise _twelvedata_error(code, _scrub(message, api_key), symbol, interval, where)


def _answer(response: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    """(code, message, body) of a Twelve Data answer: errors come as HTTP errors or as
    `{"status": "error", "code": ...}` with HTTP 200."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        code = response.status_code if response.status_code != 200 else 502
        return code, f"HTTP {response.status_code}, not a JSON object: {response.text[:200]!r}", {}
    if body.get("status") == "error" or response.status_code != 200:
        given = body.get("code")
        return (
            given if isinstance(given, int) else response.status_code,
            str(body.get("message", "")),
            body,
        )
    if not body.get("values"):
        return 204, "the answer holds no candles ('values' is empty or absent)", body
    return 200, "", body


def _twelvedata_error(code: int, message: str, symbol: str, interval: str, where: str) -> NodeError:
    if code in (401, 403):
        return NodeError(f"{where} refused the API key (setting TWELVEDATA_API_KEY), {code}: {message}")
    if code in (400, 404) and "interval" in message.lower():
        return NodeError(f"{where} rejected parameter 'interval' = '{interval}' ({code}): {message}")
    if code in (400, 404):
        return NodeError(f"{where} does not know parameter 'symbol' = '{symbol}' ({code}): {message}")
    if code == 204:
        return NodeError(
            f"{where} returned no candles for symbol '{symbol}', interval '{interval}': {message}"
        )
    return NodeError(f"{where} answered {code} for symbol '{symbol}': {message}")


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), 120.0)
    except ValueError:
        return default


def _check_time_left(seconds: float, seconds_left: Callable[[], float | None], where: str) -> None:
    left = seconds_left()
    if left is not None and left < seconds:
        raise NodeError(f"{where} is rate-limiting (429) and the node's timeout comes before the next try")


def _scrub(text: str, secret: str) -> str:
    """`text` without the secret in it."""
    return text.replace(secret, "***") if secret else text


node_type = NodeType(
    name="market_data",
    params=MarketDataParams,
    run=run,
    description="OHLCV candles from twelvedata, a CSV file or a seeded random walk, cleaned",
    imports=("pandas", "numpy", "httpx"),
)
