"""Service URLs: which database they name, and how to show them without their password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_redis_db(url: str, db: int) -> str:
    """`url` naming Redis database `db` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def with_mongo_database(url: str, database: str) -> str:
    """`url` naming MongoDB database `database` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def redact(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def is_local(url: str) -> bool:
    """Whether `url` names a server on this machine's loopback interface."""
    return (urlsplit(url).hostname or "") in ("localhost", "127.0.0.1", "::1")


def port_of(url: str, default: int) -> int:
    """The port `url` names, or the service's `default`."""
    return urlsplit(url).port or default
