"""Confinement of user-supplied paths to the configured roots.

``resolve_under(root, rel, field)`` returns the absolute path of ``rel`` inside ``root`` or
raises ``PathOutsideRoot`` naming ``field`` (e.g. ``model.path``). Rejected: ``..`` components,
absolute paths that are not inside the root, and paths that leave the root through a symlink
(checked on the fully resolved path, so a link anywhere along the way counts). Used by the
gateway when it validates a job and by the worker when it runs one.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


class PathOutsideRoot(ValueError):
    """A path that is not confined to its root; ``field`` names the spec field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def resolve_under(root: str | os.PathLike[str], rel: str, field: str) -> Path:
    """Absolute, symlink-resolved path of ``rel`` under ``root``; raises ``PathOutsideRoot``."""
    if not rel or not rel.strip():
        raise PathOutsideRoot(field, "must not be empty")
    if "\x00" in rel:
        raise PathOutsideRoot(field, "must not contain NUL bytes")
    parts = set(PurePosixPath(rel).parts) | set(PureWindowsPath(rel).parts)
    if ".." in parts:
        raise PathOutsideRoot(field, f"'..' is not allowed in paths ({rel!r})")
    base = Path(root).expanduser().resolve()
    candidate = Path(rel).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    resolved = candidate.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        why = "is outside" if Path(rel).is_absolute() else "resolves (through a symlink) outside"
        raise PathOutsideRoot(field, f"{rel!r} {why} the configured root {str(base)!r}")
    return resolved
