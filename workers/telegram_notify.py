"""`telegram_notify`: sends a message to a Telegram chat through the Bot API.

Uses python-telegram-bot's `Bot` (async) inside the synchronous node with `asyncio.run`. The
bot token comes only from the settings (`TELEGRAM_BOT_TOKEN`, environment or `.env`), never
from params, and is kept out of outputs, errors and logs; `TELEGRAM_API_URL` points the bot
at another Bot API server (requests go to `<root>/bot<token>/<method>`). Without a token the
node does not fail: it logs the text and answers `{sent: false, reason}`, so workflows run
on machines that have no bot.

Texts longer than Telegram's 4096 characters go as several messages, split at newlines
where possible. A 429 (flood control) is retried after the `retry_after` Telegram gives, a
few times and never past the node's deadline; a rejected token or an unknown chat fails the
node with a message that says which setting to check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.engine.registry import NodeContext, NodeType
from orchestrator.errors import NodeError, NodeTimeout

if TYPE_CHECKING:  # imported where used: checking a workflow imports this module, not them
    from telegram import Bot, Message
    from telegram.error import RetryAfter, TelegramError

#: Telegram's limit on one message's text, in UTF-16 code units (what Telegram counts).
MAX_MESSAGE_LENGTH = 4096
#: Tries per message when Telegram answers 429 (flood control).
MAX_ATTEMPTS = 5
#: Longest wait for one HTTP request, when the node has no earlier deadline.
REQUEST_TIMEOUT_S = 30.0
NO_TOKEN = "TELEGRAM_BOT_TOKEN is not set"
_TOKEN_MASK = "<TELEGRAM_BOT_TOKEN>"
# Loggers that print the token: httpx logs every request URL, the Bot its base URL.
_TOKEN_LOGGERS = ("httpx", "telegram.Bot")


class TelegramNotifyParams(BaseModel):
    """The message and where it goes. The bot token is a setting, never a parameter."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="the message; numbers and JSON are sent as text")
    chat_id: int | str | None = Field(None, description="default: TELEGRAM_CHAT_ID")
    parse_mode: Literal["Markdown", "MarkdownV2", "HTML"] | None = None
    disable_notification: bool = False

    @field_validator("text", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        return str(value) if isinstance(value, int | float) else value

    @field_validator("parse_mode", "chat_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value


def run(params: TelegramNotifyParams, context: NodeContext) -> dict[str, Any]:
    """Send the text (in as many messages as it needs) and return their ids."""
    secret = context.settings.telegram_bot_token
    token = secret.get_secret_value().strip() if secret is not None else ""
    if not token:
        context.logger.warning("%s: message not sent; its text:\n%s", NO_TOKEN, params.text)
        return {"sent": False, "reason": NO_TOKEN}
    chat_id = params.chat_id if params.chat_id is not None else context.settings.telegram_chat_id
    if chat_id is None or chat_id == "":
        raise NodeError(
            f"node '{context.node_id}' (telegram_notify): no chat to send to: "
            "give the parameter chat_id or set TELEGRAM_CHAT_ID"
        )
    from telegram.warnings import PTBDeprecationWarning

    _mask_token_in_logs(token)
    sender = _Sender(token, context.settings.telegram_api_url, params, chat_id, context)
    # python-telegram-bot warns (PTBDeprecationWarning) whenever a RetryAfter is made or read;
    # the warning is about its own future API, not something a workflow author can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        messages = asyncio.run(sender.send_all(split_text(params.text)))
    return {
        "sent": True,
        "chat_id": messages[0].chat_id,
        "messages": len(messages),
        "message_ids": [m.message_id for m in messages],
    }


def split_text(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Cut a text into pieces of at most `limit` UTF-16 code units.

    A cut goes at the last newline of the piece (the newline itself is dropped), else at its
    last space, as long as that keeps the piece at least half full; else at the limit.
    """
    pieces: list[str] = []
    rest = text
    while _utf16_length(rest) > limit:
        end = _fitting(rest, limit)
        cut = rest.rfind("\n", 0, end)
        if cut < end // 2:
            cut = rest.rfind(" ", 0, end)
        if cut < end // 2:
            pieces.append(rest[:end])
            rest = rest[end:]
        else:
            pieces.append(rest[:cut])
            rest = rest[cut + 1 :]
    pieces.append(rest)
    return [piece for piece in pieces if piece.strip()] or [text]


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitting(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 code units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


class _Sender:
    """One node's messages: the bot, its HTTP client, and what to do with each Bot API error."""

    def __init__(
        self,
        token: str,
        api_url: str,
        params: TelegramNotifyParams,
        chat_id: int | str,
        context: NodeContext,
    ) -> None:
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.params = params
        self.chat_id = chat_id
        self.context = context
        self.where = f"node '{context.node_id}' (telegram_notify)"

    async def send_all(self, pieces: list[str]) -> list[Message]:
        """Send every piece in order; the first failure fails the node, saying what was sent."""
        from telegram import Bot
        from telegram.error import TelegramError
        from telegram.request import HTTPXRequest

        timeout = self._request_timeout()
        request = HTTPXRequest(
            connection_pool_size=1, read_timeout=timeout, write_timeout=timeout, connect_timeout=timeout
        )
        # Not `async with bot`: its initialize() calls getMe and puts the token in its error.
        bot = Bot(self.token, base_url=f"{self.api_url}/bot", request=request, get_updates_request=request)
        await request.initialize()
        sent: list[Message] = []
        try:
            for piece in pieces:
                sent.append(await self._send_one(bot, piece, len(sent), len(pieces)))
        except TelegramError as exc:
            raise self._node_error(exc, sent, len(pieces)) from exc
        finally:
            await request.shutdown()
        return sent

    async def _send_one(self, bot: Bot, text: str, index: int, total: int) -> Message:
        from telegram.error import RetryAfter

        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await bot.send_message(
                    chat_id=self.chat_id,
                    text=text,
                    parse_mode=self.params.parse_mode,
                    disable_notification=self.params.disable_notification,
                )
            except RetryAfter as exc:
                wait = _retry_after_s(exc)
                self._check_can_wait(wait, attempt, index, total)
                self.context.logger.warning(
                    "Telegram flood control on message %d of %d: retrying in %g s", index + 1, total, wait
                )
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _check_can_wait(self, wait: float, attempt: int, index: int, total: int) -> None:
        sent = f"{index} of {total} messages were sent" if total > 1 else "nothing was sent"
        if attempt >= MAX_ATTEMPTS:
            raise NodeError(
                f"{self.where}: Telegram still refuses with flood control (429) after "
                f"{MAX_ATTEMPTS} attempts; {sent}"
            )
        left = self.context.seconds_left()
        if left is not None and wait >= left:
            raise NodeTimeout(
                f"{self.where}: Telegram asks to wait {wait:g} s (flood control, 429), past the "
                f"node's timeout ({max(left, 0):.1f} s left); {sent}"
            )

    def _request_timeout(self) -> float:
        left = self.context.seconds_left()
        return REQUEST_TIMEOUT_S if left is None else max(min(REQUEST_TIMEOUT_S, left), 0.1)

    def _node_error(self, exc: TelegramError, sent: list[Message], total: int) -> NodeError:
        """A message that says what went wrong, what to check, and what was sent already."""
        from telegram.error import BadRequest, Forbidden, InvalidToken

        detail = self._redact(exc.message)
        if isinstance(exc, InvalidToken):
            what = (
                f"the Bot API server at {self.api_url} rejected the bot token ({detail}): "
                "check TELEGRAM_BOT_TOKEN (and TELEGRAM_API_URL)"
            )
        elif isinstance(exc, BadRequest) and "chat not found" in detail.lower():
            what = (
                f"chat {self.chat_id!r} not found ({detail}): check chat_id / TELEGRAM_CHAT_ID, "
                "and that the bot was added to the chat or the user has started it"
            )
        elif isinstance(exc, BadRequest) and "parse" in detail.lower():
            what = (
                f"Telegram could not parse the text as {self.params.parse_mode} ({detail}): escape "
                "it, or set parse_mode to none"
            )
        elif isinstance(exc, Forbidden):
            what = f"the bot may not write to chat {self.chat_id!r} ({detail})"
        else:
            what = f"Telegram refused the message or could not be reached at {self.api_url}: {detail}"
        if sent:
            what += f"; {len(sent)} of {total} messages were sent (ids {[m.message_id for m in sent]})"
        return NodeError(f"{self.where}: {what}")

    def _redact(self, text: str) -> str:
        return _mask_token(text, self.token)


def _retry_after_s(exc: RetryAfter) -> float:
    """Seconds Telegram asks to wait (an int, or a timedelta in newer python-telegram-bot)."""
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class _MaskToken(logging.Filter):
    """Replaces the bot token in log records (httpx logs each request's URL, which holds it)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _mask_token(message, self.token)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def _mask_token(text: str, token: str) -> str:
    """`text` without the bot token, whatever its case (the library lower-cases some messages)."""
    return re.sub(re.escape(token), _TOKEN_MASK, text, flags=re.IGNORECASE) if token else text


def _mask_token_in_logs(token: str) -> None:
    for name in _TOKEN_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _MaskToken) and f.token == token for f in log.filters):
            log.addFilter(_MaskToken(token))


node_type = NodeType(
    name="telegram_notify",
    params=TelegramNotifyParams,
    run=run,
    description="sends a Telegram message (TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID)",
    rerun_safe=False,  # a message sent twice cannot be taken back
    imports=("telegram", "telegram.error", "telegram.request", "telegram.warnings"),
)
