"""The outermost gateway middleware: a request id on every request and response, and the one
catch-all for errors nothing else handled.

The id is the caller's ``X-Request-ID`` when it is sane (1-128 characters of ``A-Za-z0-9._:-``),
otherwise a fresh random one; it is stored as ``request.state.request_id`` and returned in the
``X-Request-ID`` response header. An exception that escapes the application is logged here with
its traceback and the request id, and the client gets the standard JSON 500 —
``{"error": {"code": "internal", "message": ..., "request_id": ...}}`` — never a traceback or a
server path. If the response had already started (a stream), it is ended where it stands.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_body

log = logging.getLogger("curvedit.gateway")

HEADER = "X-Request-ID"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    value = state.get("request_id") if isinstance(state, dict) else None
    return value if isinstance(value, str) else None


def internal_error_body(request_id: str) -> bytes:
    message = f"internal error; the gateway log has the details under request id {request_id}"
    return json.dumps(error_body("internal", message, request_id=request_id)).encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers") or [] if k == b"x-request-id"), None)
        rid = given.decode("ascii") if given is not None and _SANE.fullmatch(given) else uuid.uuid4().hex
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        state["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s (request_id=%s)", scope.get("method"), scope.get("path"), rid
            )
            if started:
                with contextlib.suppress(Exception):  # the client may be gone; nothing left to tell it
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            body = internal_error_body(rid)
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", rid.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
