"""Confinement of user-supplied paths to the configured roots.

``resolve_under(root, rel, field)`` returns the absolute path of ``rel`` inside ``root`` or
raises ``PathOutsideRoot`` naming ``field`` (e.g. ``model.path``). Rejected: ``..`` components,
absolute paths that are not inside the root, and paths that leave the root through a symlink
(checked on the fully resolved path, so a link anywhere along the way counts). Used by the
gateway when it validates a job and by the worker when it runs one.

A path the operating system cannot use is ``UnusablePath`` (a ``PathOutsideRoot``, same
``field``): a component longer than ``NAME_MAX`` bytes or a whole path longer than ``PATH_MAX``
(ENAMETOOLONG), a symlink loop (ELOOP), ``~user`` naming no user. The checks run before any
system call, so nothing later trips over the same path.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

NAME_MAX = 255  # bytes in one path component (Linux, macOS)
PATH_MAX = 4096  # bytes in a whole path


class PathOutsideRoot(ValueError):
    """A path that is not confined to its root; ``field`` names the spec field."""

    code = "path_outside_root"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnusablePath(PathOutsideRoot):
    """A path the operating system cannot resolve (too long, a symlink loop, an unknown ``~user``)."""

    code = "invalid_path"


def _shown(rel: str) -> str:
    return repr(rel if len(rel) <= 80 else rel[:60] + "..." + rel[-12:])


def _check_lengths(path: str, field: str, rel: str) -> None:
    raw = os.fsencode(path)
    if len(raw) > PATH_MAX:
        raise UnusablePath(field, f"{_shown(rel)} is too long: {len(raw)} bytes with its root, at most {PATH_MAX}")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise UnusablePath(
            field, f"{_shown(rel)} has a path component of {len(longest)} bytes; at most {NAME_MAX} per name"
        )


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
    try:
        candidate = Path(rel).expanduser()
    except RuntimeError:  # "~someone" who has no home directory here
        raise UnusablePath(field, f"{_shown(rel)} starts with '~' but names no user of this machine") from None
    if not candidate.is_absolute():
        candidate = base / candidate
    _check_lengths(str(candidate), field, rel)
    try:
        resolved = candidate.resolve()
    except RuntimeError:  # Python < 3.13 reports symlink loops this way
        raise UnusablePath(field, f"{_shown(rel)} runs into a symlink loop") from None
    except OSError as exc:
        reason = "runs into a symlink loop" if exc.errno == errno.ELOOP else f"cannot be resolved ({exc.strerror})"
        raise UnusablePath(field, f"{_shown(rel)} {reason}") from None
    _check_lengths(str(resolved), field, rel)
    if resolved != base and not resolved.is_relative_to(base):
        why = "is outside" if Path(rel).is_absolute() else "resolves (through a symlink) outside"
        raise PathOutsideRoot(field, f"{rel!r} {why} the configured root {str(base)!r}")
    return resolved
