"""Typed pipeline failures: every error a job can end with carries a machine-readable code.

The RQ job maps a ``PipelineError`` to the job record's ``error {code, message}``; anything
else becomes ``internal``. ``invalid_input`` is bad content found by the worker (a malformed
recitation row, a token id outside the vocabulary, bytes that are not UTF-8); its message names
the field and the line or index, never a server path.
"""

from __future__ import annotations

from typing import Any

from contract.errors import ErrorCode


class PipelineError(Exception):
    """A failure with a stable ``code`` (see ``ErrorCode``) and a human-readable message."""

    def __init__(self, code: ErrorCode, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message
        self.result = result  # what the job did find (e.g. the search trials of objective_not_met)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
