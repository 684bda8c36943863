"""Secrets: names that look like one, and the masking of the values a worker holds.

Secrets come from the environment (or a settings file) of the processes that use them, never
from run variables: a variable named like a secret is refused wherever variables enter a
run (`check_variable_names`), unless the workflow says `allow_secret_variables: true`.

As a last line of defence, the values of the secrets a process holds (its settings that are
secrets, and every environment variable named like one) are masked, whatever their case, in
what a node records (outputs, errors, tracebacks) and in the worker's log lines.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from orchestrator.errors import OrchestratorError

MASK = "***"
MIN_SECRET_LEN = 6  # shorter values ("1", "yes") would mask ordinary text
# Words that make a name a secret's; pairs that do only together (an `api` is no secret).
SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "secrets", "token", "credential", "credentials", "auth"}
)
SECRET_PAIRS = frozenset({"apikey", "privatekey", "accesskey", "secretkey", "sessionkey", "clientsecret"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def looks_secret(name: str) -> bool:
    """Whether a variable's name says it holds a secret: `password`, `Api-Key`, `private_key`,
    `authToken`, `DB_PASSPHRASE`, `credentials`… (case and separators do not matter)."""
    words = [w.lower() for w in _WORD.findall(name)]
    if any(word in SECRET_WORDS for word in words):
        return True
    joined = "".join(words)
    return any(pair in joined for pair in SECRET_PAIRS)


def secret_names(value: Any, path: str = "") -> Iterator[str]:
    """The dotted paths of the keys in `value` (nested objects and lists) named like secrets."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if looks_secret(str(key)):
                yield here
            yield from secret_names(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from secret_names(item, f"{path}[{index}]")


def check_variable_names(variables: Mapping[str, Any], where: str) -> None:
    """Refuse run variables named like secrets (an `OrchestratorError` naming the first)."""
    for name in secret_names(variables):
        raise OrchestratorError(
            f"{where}: variable '{name}' looks like a secret; secrets belong in the environment of "
            "the workers (or a settings file), not in run variables. Set `allow_secret_variables: "
            "true` on the workflow to pass it anyway"
        )


class SecretMask:
    """Masks, whatever their case, the secret values this process holds."""

    def __init__(self, values: list[str]) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in kept), re.IGNORECASE) if kept else None

    @classmethod
    def of_process(cls, settings_secrets: list[str], environ: Mapping[str, str] | None = None) -> SecretMask:
        """The mask of the given setting values and of every environment variable named like
        a secret."""
        environ = os.environ if environ is None else environ
        return cls([*settings_secrets, *(value for name, value in environ.items() if looks_secret(name))])

    def text(self, value: str) -> str:
        """`value` with every secret replaced by `***`."""
        return value if self._pattern is None else self._pattern.sub(MASK, value)

    def json(self, value: Any) -> Any:
        """A JSON value with every string (keys too) masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value

    def log_filter(self) -> logging.Filter:
        """A logging filter that masks the secrets in every record it passes."""
        mask = self

        class _Masking(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                message = record.getMessage()
                masked = mask.text(message)
                if masked != message:
                    record.msg, record.args = masked, ()
                return True

        return _Masking()
