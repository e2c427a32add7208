"""The request guard: what stands between a client and the routes, before any route runs.

- :class:`RequestGuard`, a pure ASGI middleware: the API key (``X-API-Key``, constant-time, when keys are configured;
  without keys, only loopback ``Host`` names and ``Origin`` pages: no DNS rebinding, no cross-site form posts) and
  the body size limit are checked *before* any body is read; a body that streams in past the limit is cut off
  (413), one that stalls is cut off (408); a full inference queue refuses ``POST /v1/segment`` before its multipart
  body is parsed (503 + ``Retry-After``); every answer gets ``nosniff`` / ``no-referrer`` and the viewer's pages a
  strict Content-Security-Policy.
- :func:`add_error_handlers`: every error is JSON ``{"error": "<one line>"}`` with the status of the
  :mod:`rscore.errors` tree (server folders scrubbed from the text), 503 for a full queue, 504 past the deadline, 422
  for a malformed request (naming the field), 500 with a reference for a bug (traceback only in the service log).

Server-side paths are confined to the allowed roots by :mod:`rscore.service.security`; uploads by
:mod:`rscore.service.uploads`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rscore.errors import RscoreError
from rscore.service.pool import InferencePool, QueueFull, RequestTimeout
from rscore.service.security import key_is_valid
from rscore.service.settings import MIB, Settings

log = logging.getLogger("rscore.service.app")

__all__ = ["RequestGuard", "add_error_handlers", "json_error", "PAGE_CSP", "RESULT_CSP", "API_KEY_HEADER"]

API_KEY_HEADER = "X-API-Key"
FORM_SLACK_BYTES = MIB  # room for the form fields and multipart framing on top of the file itself
# A refused body up to this size is read and discarded so that the client sees the answer (closing a socket with
# unread data resets it); a larger one is not read at all: the answer goes out at once with "Connection: close".
DRAIN_MAX_BYTES = MIB
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
RESULT_CSP = "default-src 'none'; img-src 'self'; sandbox"


class BodyRefused(StarletteHTTPException):
    """Raised from ``receive`` while the body streams in (over the limit: 413; stalled: 408); an HTTPException so
    FastAPI passes it through as is."""


class RequestGuard:
    """Pure ASGI middleware: API key and body size checks *before* any body is read; security headers."""

    def __init__(self, app: ASGIApp, settings: Settings, pool: InferencePool) -> None:
        self.app = app
        self.settings = settings
        self.pool = pool
        self.max_body = settings.max_upload_bytes + FORM_SLACK_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        if path.startswith("/v1/"):
            length_header = headers.get("content-length", "")
            length = int(length_header) if length_header.isdigit() else None
            expects_continue = headers.get("expect", "").lower() == "100-continue"

            async def reject(status: int, error: str, extra: Mapping[str, str] | None = None) -> None:
                # Read (and discard) a modest unread body first: closing a socket with unread data resets the
                # connection, and the client would see a network error instead of this answer.
                extra = dict(extra or {})
                if not expects_continue and (length is None or length <= DRAIN_MAX_BYTES):
                    await _drain(receive, DRAIN_MAX_BYTES)
                else:
                    extra["Connection"] = "close"
                await json_error(status, error, extra)(scope, receive, send_with_headers)

            foreign = None if self.settings.auth_required else _foreign_caller(headers)
            if foreign:  # DNS rebinding or a cross-site form: a web page reaching a keyless loopback service
                await reject(403, foreign)
                return
            if self.settings.auth_required and not key_is_valid(headers.get("x-api-key"), self.settings.api_keys):
                await reject(401, "missing or invalid API key: send it in the X-API-Key header", {"WWW-Authenticate": "ApiKey"})
                return
            if length is not None and length > self.max_body:
                await reject(413, self._too_large(length))
                return
            if path == "/v1/segment" and scope["method"] == "POST" and self.pool.full:
                # refuse before parsing a multipart body that could not be served anyway: overload stays cheap
                full = self.pool.refuse()
                await reject(503, str(full), {"Retry-After": str(full.retry_after_s)})
                return
            received = 0
            read_timeout = self.settings.read_timeout_s

            body_done = False

            async def counting_receive() -> Message:
                nonlocal received, body_done
                if body_done:  # later calls wait for a disconnect: no deadline on those
                    return await receive()
                try:  # a client that stalls mid-body holds a connection and a form parser: cut it off
                    message = await asyncio.wait_for(receive(), read_timeout)
                except asyncio.TimeoutError:
                    raise BodyRefused(
                        408, f"the request body stalled for {read_timeout:g} s (RSCORE_READ_TIMEOUT_S); send it faster",
                        headers={"Connection": "close"},
                    ) from None
                if message["type"] == "http.request":
                    body_done = not message.get("more_body", False)
                    received += len(message.get("body", b""))
                    if received > self.max_body:  # a chunked body is capped while it streams in, not read on
                        raise BodyRefused(413, self._too_large(received), headers={"Connection": "close"})
                return message

            await self.app(scope, counting_receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _too_large(self, size: int) -> str:
        return f"request body of {size / MIB:.1f} MiB is over the upload limit of {self.settings.max_upload_mb:g} MiB"


def _loopback_name(host: str) -> bool:
    """``localhost`` (and its subdomains) or a loopback address, with or without a port."""
    import ipaddress

    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _foreign_caller(headers: Mapping[str, str]) -> str | None:
    """Why a request to a service without API keys (which listens on loopback only) comes from a web page rather
    than from this machine: a ``Host`` that is not a loopback name (DNS rebinding: the browser would let that page
    read the answers) or an ``Origin`` that is not a loopback page (a cross-site form post); ``None`` when neither."""
    from urllib.parse import urlsplit

    hint = "this service has no API keys and serves only this machine's loopback names and pages; set RSCORE_API_KEYS"
    host = headers.get("host", "")
    if host and not _loopback_name(host):
        return f"host name '{host[:100]}' refused: {hint} to serve other names"
    origin = headers.get("origin")
    if origin is not None:
        try:
            name = urlsplit(origin).hostname or ""
        except ValueError:
            name = ""
        if not name or not _loopback_name(name):
            return f"cross-site request from origin '{origin[:100]}' refused: {hint} to serve other pages"
    return None


async def _drain(receive: Receive, budget: int) -> None:
    """Consume and discard the rest of a request body, up to ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def json_error(status: int, error: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error body: one line, valid UTF-8 (lone surrogates from a client's JSON are shown escaped)."""
    from rscore.errors import shorten

    line = shorten(error).encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": line}, status_code=status, headers=dict(headers or {}))


def add_error_handlers(app: FastAPI, scrub: Callable[[str], str]) -> None:
    """Every error as one JSON line (see the module docstring); ``scrub`` takes server folders out of messages."""

    @app.exception_handler(RscoreError)
    async def _rscore_error(_request: Request, exc: RscoreError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return json_error(exc.http_status, scrub(str(exc)))

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        return json_error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(RequestTimeout)
    async def _timeout(_request: Request, exc: RequestTimeout) -> JSONResponse:
        return json_error(504, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = list(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or "request"
        msg = first.get("msg", "invalid request")
        more = len(exc.errors()) - 1
        return json_error(422, f"{where}: {msg}" + (f" (and {more} more)" if more > 0 else ""))

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:8]
        log.error("internal error %s", ref, exc_info=exc)
        return json_error(500, f"internal error {ref}: {type(exc).__name__} (see the service log)")
