"""Path confinement for user-supplied paths: a relative path must resolve inside its root.

Applies the same rule as the gateway (``contract.paths.resolve_under``: resolve symlinks and
``..``, then require the root as a prefix). Failures become ``PipelineError('invalid_path', ...)``
naming the field.
"""

from __future__ import annotations

from pathlib import Path

from contract.paths import resolve_under
from workers.pipeline.errors import PipelineError


def confined(root: Path, rel: str, field: str) -> Path:
    """``root / rel`` resolved, or ``PipelineError('invalid_path')`` when it escapes ``root``."""
    try:
        return Path(resolve_under(Path(root), rel, field))
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the helper raises, the job gets one code
        raise PipelineError("invalid_path", str(getattr(exc, "detail", None) or exc)) from exc
