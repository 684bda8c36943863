"""What a Redis or MongoDB outage looks like to a caller: one `ServiceUnavailable` that names
the URL that did not answer and what to do, instead of a driver's traceback."""

from __future__ import annotations

from pymongo.errors import ConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import Settings
from orchestrator.urls import redact


def service_error(exc: BaseException, settings: Settings) -> ServiceUnavailable | None:
    """The outage behind `exc` (itself, or any exception it was raised from), or None when
    `exc` is not about an unreachable Redis or MongoDB."""
    from kombu.exceptions import OperationalError  # kombu is imported by whatever sent a message

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ServiceUnavailable):
            return seen
        if isinstance(seen, ConnectionFailure):
            return ServiceUnavailable("MongoDB", redact(settings.mongo_url), "MONGO_URL", _first_line(seen))
        if isinstance(seen, RedisConnectionError | RedisTimeoutError | OperationalError):
            return ServiceUnavailable("Redis", redact(settings.redis_url), "REDIS_URL", _first_line(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _first_line(exc: BaseException, width: int = 120) -> str:
    """The start of a driver's message (pymongo appends a whole topology description)."""
    text = (
        str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0].splitlines()[0] if str(exc) else ""
    )
    return text if len(text) <= width else text[: width - 1] + "…"
