"""The measured peak memory of the job that just ran, beside its preflight estimate.

Every job runs in a freshly spawned work horse, so the process's peak resident set
(``ru_maxrss``) is the job's CPU peak; on a GPU, ``torch.cuda.max_memory_allocated`` is the
device peak. ``run_edit_job`` appends them as a ``memory`` event next to the record's preflight
``estimate`` (``contract.preflight``), so the memory model can be checked on real jobs. torch is
only read if the job already imported it.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

GIB = 2**30


def measured_peaks() -> dict[str, float]:
    """``{"host_gb": peak RSS}`` plus ``{"device_gb": ...}`` when CUDA was used."""
    out = {"host_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["device_gb"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    return out


def memory_event(estimate: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Message and data of the ``memory`` event: measured peaks and the preflight's, if any."""
    peaks = measured_peaks()
    estimated = estimate.get("peak_gb") if isinstance(estimate, dict) else None
    measured = peaks.get("device_gb", peaks["host_gb"])
    where = "device" if "device_gb" in peaks else "host"
    vs = f" (preflight estimated {estimated:.2f} GiB)" if isinstance(estimated, int | float) else ""
    return (
        f"peak memory {measured:.2f} GiB on the {where}{vs}",
        {"kind": "memory", **peaks, "estimated_gb": estimated},
    )
