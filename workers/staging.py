"""Names of the staging directories an export writes before renaming them into place (no torch).

``staging_dir`` (``workers/artifacts.py``) builds ``<final>.tmp-<job id>-<random>`` beside the
final output directory. A process killed mid-export cannot remove it, so two places do: the next
attempt of the same job (before it stages again), and the reaper when it gives the job up as
``worker_lost`` — that is why this module must not import torch (the reaper runs in the worker's
parent process).
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path


def staging_prefix(final: Path, job_tag: str | None) -> str:
    """The name prefix of ``final``'s staging directories (of one job when ``job_tag`` is given)."""
    return f"{final.name}.tmp-{job_tag}-" if job_tag else f"{final.name}.tmp-"


def remove_staging(final: Path, job_tag: str) -> list[Path]:
    """Delete every staging directory job ``job_tag`` left beside ``final``; returns them."""
    removed: list[Path] = []
    parent = Path(final).parent
    if not parent.is_dir():
        return removed
    for stale in parent.glob(f"{glob.escape(staging_prefix(Path(final), job_tag))}*"):
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed
