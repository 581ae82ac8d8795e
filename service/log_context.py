"""Gateway middleware (inside ``RequestIdMiddleware``): binds the request id and, for
``/v1/edit-jobs/<job id>...`` paths, the job id to every log line of the request
(``contract.logs``), writes one access line per request with both, and — when tracing is on
(``contract.tracing``) — wraps the request in a span."""

from __future__ import annotations

import contextlib
import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract import tracing
from contract.logs import log_context
from service.request_id import request_id_of

log = logging.getLogger("curvedit.access")

_JOB_PATH = re.compile(r"^/v1/edit-jobs/(job_[A-Za-z0-9_-]{1,80})")


class LogContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        match = _JOB_PATH.match(path)
        job_id = match.group(1) if match else None
        rid = request_id_of(scope)
        status = 500
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        t = tracing.tracer()
        attributes = {"http.request.method": str(scope.get("method", "")), "url.path": path}
        name = f"{scope.get('method')} {path}"
        span_cm = t.start_as_current_span(name, attributes=attributes) if t is not None else contextlib.nullcontext()
        with log_context(job_id=job_id, request_id=rid), span_cm as span:
            try:
                await self.app(scope, receive, capture)
            finally:
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    if rid:
                        span.set_attribute("curvedit.request_id", rid)
                    if job_id:
                        span.set_attribute("curvedit.job_id", job_id)
                log.info(
                    "%s %s %d %.1f ms",
                    scope.get("method"),
                    path,
                    status,
                    (time.perf_counter() - started) * 1000,
                    extra={"status": status},
                )
