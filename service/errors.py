"""One JSON error shape for every 4xx/5xx the gateway returns, and the handlers that produce it.

Every error body is::

    {"error": {"code": "<machine-readable>", "message": "<human-readable>", "field": "<dotted.path>|null"}}

Request validation errors (422, ``code="validation_error"``) also carry ``details``: FastAPI's
list of ``{loc, msg, type}``, and ``field`` names the first failing field in dotted form
(``model.path``, ``edit.keep_mass[1]``) with the leading ``body`` dropped. Redis being
unreachable is a 503 ``redis_unavailable``, never a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise anywhere in a request to answer with the standard error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra or {}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dotted(loc: Sequence[Any]) -> str:
    """``("body", "edit", "keep_mass", "list[constrained-float]", 1)`` -> ``"edit.keep_mass[1]"``."""
    parts = list(loc)
    in_body = bool(parts) and parts[0] == "body"
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if in_body and isinstance(p, str) and not _IDENT.fullmatch(p):
            continue  # pydantic's union-member tags such as "constrained-float", "list[...]"
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# Errors that only say "this union member has the wrong type" (the value is a list, so the float
# branch of ``float | list[float]`` complains too): the other member's error is the useful one.
_TYPE_MISMATCH = frozenset(
    {"float_type", "float_parsing", "int_type", "int_parsing", "list_type", "string_type", "bool_type", "dict_type"}
)


def _most_specific(details: list[dict[str, Any]]) -> dict[str, Any]:
    """The first error that is not a union member's mere type mismatch (when there is one)."""
    for d in details:
        if d.get("type") not in _TYPE_MISMATCH:
            return d
    return details[0]


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field, **exc.extra),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = jsonable_encoder(
            [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        )
        first: dict[str, Any] = _most_specific(details) if details else {"loc": [], "msg": "invalid request"}
        field = dotted(first["loc"]) or None
        if first.get("type") == "json_invalid":
            # loc is ("body", <character offset>): a position in the text, not a field
            where = first["loc"][-1] if len(first["loc"]) > 1 else None
            field = None
            message = f"malformed JSON in the request body: {first['msg']}" + (
                f" at character {where}" if isinstance(where, int) else ""
            )
        elif field:
            message = f"{field}: {first['msg']}"
        else:
            where = {"body": "request body", "query": "query", "header": "header"}.get(str((first["loc"] or [""])[0]))
            message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse(
            error_body("validation_error", message, field, details=details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        payload = getattr(exc, "payload", None)  # exceptions that carry their full error body
        return JSONResponse(
            payload if isinstance(payload, dict) else error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unavailable: %s", exc)
        return JSONResponse(
            error_body(
                "redis_unavailable",
                f"the job store (Redis) is unreachable: {str(exc).rstrip('.')}. Retry later; check CURVEDIT_REDIS_URL.",
            ),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.add_exception_handler(redis.TimeoutError, _redis_down)
