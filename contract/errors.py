"""The codes a failed job carries in ``error.code`` (the job record's ``{code, message}``).

Raised by the pipeline as ``PipelineError(code, message)`` (``workers/pipeline/errors.py``); set
by the RQ job and the reaper for ``worker_lost``, ``timeout`` and ``internal``. The gateway's own
HTTP error codes (``validation_error``, ``not_found``, ...) are a different set (``service/errors.py``).
"""

from __future__ import annotations

from typing import Literal, get_args

ErrorCode = Literal[
    "model_not_found",
    "model_load_failed",
    "remote_code_not_allowed",
    "invalid_path",
    "invalid_target",
    "dataset_not_found",
    "invalid_dataset",
    "invalid_input",
    "output_exists",
    "out_of_memory",
    "worker_lost",
    "timeout",
    "invalid_spec",
    "objective_not_met",
    "internal",
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
