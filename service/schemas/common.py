"""Shapes shared by every route: the error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. 'validation_error', 'not_found'.")
    message: str
    field: str | None = Field(default=None, description="Dotted spec field at fault, e.g. 'model.path'.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="For request validation errors: FastAPI's [{loc, msg, type}] list."
    )
    request_id: str | None = Field(
        default=None, description="On 500 'internal' errors: the id under which the gateway logged the failure."
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Not found (or owned by another key)"},
    422: {"model": ErrorResponse, "description": "Invalid input; error.field names the field"},
    500: {"model": ErrorResponse, "description": "Unexpected error (code 'internal', with request_id)"},
    503: {"model": ErrorResponse, "description": "Redis unreachable"},
}
