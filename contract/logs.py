"""Structured logs: every line carries the job id and the request id it belongs to.

``log_context(job_id=..., request_id=...)`` binds the ids for a block (context variables, so they
follow a request through async code and FastAPI's thread pool, and a job through its pipeline);
``ContextFilter`` copies them onto every ``LogRecord``; ``JsonFormatter`` writes one JSON object
per line: ``time``, ``level``, ``logger``, ``message``, ``job_id``, ``request_id`` (null when
unknown), ``exc_info`` when there is one, and any ``extra={...}`` fields.

``configure_logging(settings)`` installs this on the root logger when ``CURVEDIT_LOG_FORMAT=json``
(the gateway, the edit workers and their work horses, the delivery worker); with the default
``text`` the ids are appended to the usual one-line format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

job_id_var: ContextVar[str | None] = ContextVar("curvedit_job_id", default=None)
request_id_var: ContextVar[str | None] = ContextVar("curvedit_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s [job=%(job_id)s request=%(request_id)s]"
# LogRecord attributes that are not "extra" fields
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


@contextlib.contextmanager
def log_context(*, job_id: str | None = None, request_id: str | None = None) -> Iterator[None]:
    """Bind ``job_id`` / ``request_id`` (those given) to every log line of the block."""
    tokens = []
    if job_id is not None:
        tokens.append((job_id_var, job_id_var.set(job_id)))
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Puts the bound ids on each record (an id already given via ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": getattr(record, "job_id", None),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(settings: Any) -> None:
    """Root logging for a curvedit process (idempotent): JSON lines when ``settings.log_format`` is
    ``json``, else the text format with the ids; level ``settings.log_level``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_curvedit", False):
            root.removeHandler(handler)
    if settings.log_format == "json":
        handler = json_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        handler.addFilter(ContextFilter())
    handler._curvedit = True  # type: ignore[attr-defined]
    for other in list(root.handlers):  # one set of lines, not two
        root.removeHandler(other)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    if settings.log_format == "json":
        # progress bars are not log lines: keep stderr parseable (transformers honours this too)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # uvicorn's own loggers too, through the root handler
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            lg = logging.getLogger(name)
            lg.handlers.clear()
            lg.propagate = True
