"""Server paths out of client-visible messages.

A job's ``error.message`` and its events are read by API clients, who must never learn where the
server keeps models, data or artifacts. ``public_message`` rewrites a message before it is stored:
each configured root (``model_root``, ``data_root``, ``output_root``, ``dataset_dir``,
``state_dir``) becomes its name in angle brackets (``<model_root>/m/config.json``), and any other
absolute path (the Hugging Face cache, site-packages, a home directory) becomes ``<path>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from contract.settings import Settings

_ABSOLUTE = re.compile(r"(?<![\w:/.<>])/(?:[^\s/'\",:;()\[\]]+/)*[^\s/'\",:;()\[\]]+")


def _spellings(root: Path) -> list[str]:
    """The ways a root can appear in a message: as configured (absolute) and fully resolved."""
    out = {str(Path(root).absolute()), str(Path(root).resolve())}
    return sorted((s for s in out if s not in ("/", "")), key=len, reverse=True)


def public_message(message: str, settings: Settings) -> str:
    """``message`` with every server path replaced (see the module docstring)."""
    roots = {
        "output_root": settings.output_root,
        "dataset_dir": settings.dataset_dir,
        "state_dir": settings.state_dir,
        "model_root": settings.model_root,
        "data_root": settings.data_root,
    }
    pairs = [(spelling, f"<{name}>") for name, root in roots.items() for spelling in _spellings(root)]
    for spelling, label in sorted(pairs, key=lambda p: len(p[0]), reverse=True):
        message = message.replace(spelling, label)
    return _ABSOLUTE.sub("<path>", message)


class RedactingReporter:
    """A ``Reporter`` wrapper whose event messages go through ``public_message`` (a factor-cache
    warning quoting an ``OSError`` would otherwise hand clients a server path)."""

    def __init__(self, inner: Any, settings: Settings) -> None:
        self.inner = inner
        self.settings = settings

    def stage(self, name: Any, *, cached: bool = False) -> None:
        self.inner.stage(name, cached=cached)

    def progress(self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None) -> None:
        self.inner.progress(fraction, tokens_done=tokens_done, tokens_total=tokens_total)

    def event(self, level: Any, message: str, data: dict[str, Any] | None = None) -> None:
        self.inner.event(level, public_message(message, self.settings), data)

    def cancelled(self) -> bool:
        return bool(self.inner.cancelled())
