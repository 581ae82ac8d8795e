"""Path confinement for user-supplied paths: a relative path must resolve inside its root.

Uses the gateway's ``service.paths.resolve_under`` when it exists so both sides apply one rule;
the fallback below is the same rule (resolve symlinks and ``..``, then require the root as a
prefix). Failures become ``PipelineError('invalid_path', ...)`` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.pipeline.errors import PipelineError


def _fallback_resolve_under(root: Path, rel: str, field: str) -> Path:
    base = Path(root).expanduser().resolve()
    if Path(rel).is_absolute():
        raise ValueError(f"{field} must be relative to its configured root, got an absolute path {rel!r}")
    full = (base / rel).resolve()
    if full != base and base not in full.parents:
        raise ValueError(f"{field} {rel!r} resolves outside its configured root {str(base)!r}")
    return full


def confined(root: Path, rel: str, field: str) -> Path:
    """``root / rel`` resolved, or ``PipelineError('invalid_path')`` when it escapes ``root``."""
    resolve_under: Callable[[Any, str, str], Path]
    try:
        from service.paths import resolve_under  # the gateway's helper, when present
    except ImportError:  # pragma: no cover - the gateway ships it
        resolve_under = _fallback_resolve_under
    try:
        return Path(resolve_under(Path(root), rel, field))
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the helper raises, the job gets one code
        raise PipelineError("invalid_path", str(getattr(exc, "detail", None) or exc)) from exc
