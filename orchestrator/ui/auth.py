"""Who may use the web UI, and how a browser visiting it is kept safe.

One ASGI middleware (`Guard`) checks every request before a page or the API sees it:

- Without a password or token (the UI then listens on loopback only, see `server.py`), a
  request whose `Host` is not `localhost`, `127.0.0.1` or `[::1]` is refused: a web page
  elsewhere could otherwise point a name of its own at 127.0.0.1 (DNS rebinding) and read
  the UI with the browser's help.
- With `ORCH_UI_PASSWORD`, HTTP basic auth (any user name); with `ORCH_UI_TOKEN`,
  `Authorization: Bearer <token>`, or `?token=<token>` once in a browser, which sets an
  HttpOnly, SameSite=Strict cookie. Secrets are compared in constant time.
- A request that changes something (any method but GET and HEAD) must carry the header
  `X-Requested-With: orchestrator`, which the page's script sends and a form on another
  site cannot (a custom header needs a CORS preflight this server never grants), and an
  `Origin`, when it has one, of this very host.

Every response gets headers that forbid framing, inline scripts and sniffing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from markupsafe import escape
from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.settings import Settings

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
"""Host names a loopback UI without credentials answers to."""
CSRF_HEADER = "x-requested-with"
CSRF_VALUE = "orchestrator"
COOKIE = "orch_ui"
SAFE_METHODS = frozenset({"GET", "HEAD"})
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass(frozen=True)
class Credentials:
    """The UI's password and token (either may be unset)."""

    password: str | None = None
    token: str | None = None

    @property
    def required(self) -> bool:
        """Whether requests must authenticate (a password or a token is set)."""
        return bool(self.password or self.token)

    def cookie_value(self) -> str:
        """What the token cookie holds: a digest of the token, not the token itself."""
        token = (self.token or "").encode()
        return hmac.new(token, b"orchestrator-ui-cookie", hashlib.sha256).hexdigest()


def _secret(settings: Settings, name: str, variable: str) -> str | None:
    """A setting's secret value; read from the environment when `Settings` lacks the field."""
    if name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return str(value) if value else None
    return os.environ.get(variable) or None


def credentials_of(settings: Settings) -> Credentials:
    """The credentials set by `ORCH_UI_PASSWORD` / `ORCH_UI_TOKEN`."""
    return Credentials(
        password=_secret(settings, "ui_password", "ORCH_UI_PASSWORD"),
        token=_secret(settings, "ui_token", "ORCH_UI_TOKEN"),
    )


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address to bind) stays on this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The host part of a `Host` header, lower-case, without the port (`[::1]` kept bracketed)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """The ASGI middleware that checks host, credentials and CSRF header, and adds the
    security headers (see the module's docstring)."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        send = _with_security_headers(send, scope["path"])
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self._token_in_query(request) and request.method == "GET" and not _is_api(scope["path"]):
            await self._enter_with_token(request)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        """The response that refuses `request`, or None when it may go on."""
        if not self.credentials.required and host_name(request.headers.get("host", "")) not in LOCAL_HOSTS:
            return _error(
                request,
                403,
                "this UI answers only at localhost, 127.0.0.1 or [::1] (set ORCH_UI_PASSWORD or "
                "ORCH_UI_TOKEN to serve it under other names)",
            )
        if self.credentials.required and not self.authenticated(request):
            return self._challenge(request)
        if request.method not in SAFE_METHODS:
            return _csrf_refusal(request)
        return None

    def authenticated(self, request: Request) -> bool:
        """Whether the request carries the password, the token or the token's cookie."""
        password, token = self.credentials.password, self.credentials.token
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and password is not None:
            return _same(_basic_password(value), password)
        if scheme.lower() == "bearer" and token is not None:
            return _same(value.strip(), token)
        if token is not None and _same(request.cookies.get(COOKIE, ""), self.credentials.cookie_value()):
            return True
        return self._token_in_query(request)

    def _token_in_query(self, request: Request) -> bool:
        return _same(request.query_params.get("token", ""), self.credentials.token)

    def _challenge(self, request: Request) -> Response:
        if self.credentials.password:
            response = _error(request, 401, "the UI needs its password (ORCH_UI_PASSWORD; any user name)")
            response.headers["www-authenticate"] = 'Basic realm="orchestrator", charset="UTF-8"'
            return response
        response = _error(
            request, 401, "the UI needs its token: open it once with ?token=<ORCH_UI_TOKEN>, or send "
            "`Authorization: Bearer <token>`"
        )  # fmt: skip
        response.headers["www-authenticate"] = 'Bearer realm="orchestrator"'
        return response

    def _enter_with_token(self, request: Request) -> Response:
        """Set the token's cookie and go on to the same address without the token.

        The move is a meta refresh from a page of this site, not a redirect: a redirect
        answering a link from another site stays cross-site, and the browser would not send
        the SameSite=Strict cookie with it.
        """
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        shown = escape(target)
        page = (
            '<!doctype html><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={shown}"><title>Signed in</title>'
            f'<p>Signed in. <a href="{shown}">Continue</a>.</p>'
        )
        response = HTMLResponse(page)
        response.set_cookie(
            COOKIE,
            self.credentials.cookie_value(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response


def _basic_password(value: str) -> str:
    """The password of a basic-auth value (`base64(user:password)`), or "" when malformed."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _csrf_refusal(request: Request) -> Response | None:
    """Refuse a change without the script's header, or sent from a page of another origin."""
    if request.headers.get(CSRF_HEADER, "").lower() != CSRF_VALUE:
        return _error(request, 403, f"send the header `X-Requested-With: {CSRF_VALUE}` with this request")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        return _error(request, 403, f"a request from {origin} may not change anything here")
    return None


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _error(request: Request, status: int, message: str) -> Response:
    if _is_api(request.url.path):
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)


def _with_security_headers(send: Send, path: str) -> Send:
    """`send`, adding `SECURITY_HEADERS` (and `no-store` outside /static) to the response."""
    extra: Mapping[str, str] = SECURITY_HEADERS
    if not path.startswith("/static/"):
        extra = {**SECURITY_HEADERS, "cache-control": "no-store"}

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in extra.items():
                if name not in headers:
                    headers[name] = value
        await send(message)

    return sending
