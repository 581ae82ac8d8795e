"""ASGI middleware: request body size limits (413 before the body is parsed), the check that a
JSON body holds only encodable text (422 naming the field), and the request counter for
``/metrics``. The request id and the catch-all 500 are ``service.request_id``."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.settings import Settings
from service.errors import error_body
from service.json_text import find_surrogate

_MULTIPART_SLACK = 64 << 10


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive`` once the streamed body passes the limit; an HTTPException so that
    FastAPI's body parsing re-raises it and the standard error handler answers 413."""

    def __init__(self, limit: int, name: str) -> None:
        super().__init__(413, _message(limit, name))
        self.payload = _body(limit, name)  # the standard handler answers with the same body as _send_413


class BodyLimitMiddleware:
    """413 for bodies over ``max_body_bytes`` (``max_upload_bytes`` plus multipart overhead on
    ``/v1/datasets``), whether announced by Content-Length or discovered while streaming."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, path: str) -> tuple[int, str]:
        if path.startswith("/v1/datasets"):
            return self.settings.max_upload_bytes + _MULTIPART_SLACK, "max_upload_bytes"
        return self.settings.max_body_bytes, "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, name = self._limit(scope.get("path", ""))
        shown = self.settings.max_upload_bytes if name == "max_upload_bytes" else limit
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, shown, name)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(shown, name)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_413(send, shown, name)


def _message(limit: int, name: str) -> str:
    return f"request body is larger than the limit of {limit} bytes ({name}, CURVEDIT_{name.upper()})"


def _body(limit: int, name: str) -> dict[str, Any]:
    return error_body(
        "payload_too_large",
        _message(limit, name),
        "file" if name == "max_upload_bytes" else None,
        limit_bytes=limit,
    )


async def _send_413(send: Send, limit: int, name: str) -> None:
    body = json.dumps(_body(limit, name)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonTextMiddleware:
    """422 ``invalid_text`` for a JSON body holding a lone UTF-16 surrogate (``"\\ud800"``), in a
    key or a value anywhere: such text cannot be encoded, so a record storing it could never be
    sent back; ``field`` is the dotted JSON path (``calibration.texts[0]``). 422
    ``validation_error`` for a body that is not UTF-8 (or UTF-16/32) text at all. Runs inside
    ``BodyLimitMiddleware`` (the body is buffered only up to its limit), before any route sees
    the body; text that is not JSON is left to the route's own parsing (its 422 names the spot)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if not (content_type == b"application/json" or content_type.endswith(b"+json")):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        undecodable = _not_utf8(body)
        if undecodable is not None:
            await _send_json(
                send,
                422,
                error_body(
                    "validation_error",
                    f"malformed JSON in the request body: not UTF-8 text ({undecodable}); send UTF-8 encoded JSON",
                ),
            )
            return
        field = _surrogate_field(body)
        if field is not None:
            shown = field or "the request body"
            await _send_json(
                send,
                422,
                error_body(
                    "invalid_text",
                    f"{shown}: holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), "
                    "which is not valid Unicode text; send UTF-8 text",
                    field or None,
                ),
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _not_utf8(body: bytes) -> str | None:
    """Why ``body`` is neither UTF-8 nor UTF-16/32 JSON (which ``json.loads`` also accepts), or None."""
    if body[:4].count(0) or body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None  # UTF-16/32 (NULs or a byte-order mark): json.loads decodes it itself
    try:
        body.decode("utf-8", "surrogatepass")  # what json.loads does with bytes
    except UnicodeDecodeError as exc:
        return f"invalid byte 0x{body[exc.start]:02x} at offset {exc.start}"
    return None


def _surrogate_field(body: bytes) -> str | None:
    if b"\\u" not in body and b"\x00" not in body and b"\xed" not in body:
        # a surrogate needs a \\uXXXX escape, the raw bytes ED A0..BF xx (json.loads decodes bytes
        # with "surrogatepass") or a UTF-16/32 body (which has NULs): none here
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route's parser answers with its own 422
    return find_surrogate(value)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestCounterMiddleware:
    """Counts requests by method, route template and status."""

    def __init__(self, app: ASGIApp, counter: Counter, templates: dict[int, str] | None = None) -> None:
        self.app = app
        self.counter = counter
        self.templates = templates or {}  # id(route) -> full path template (routers are nested)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: dict[str, Any] = {"code": 500}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            template = self.templates.get(id(route)) or getattr(route, "path", None) or "unmatched"
            self.counter.labels(scope.get("method", ""), template, str(status["code"])).inc()
