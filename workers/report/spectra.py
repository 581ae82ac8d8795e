"""Where one target's kept-mass selection cuts its eigenspectra.

The selection (``workers.curvature.selection``) keeps the pairs ``(i, j)`` of G-eigenvalue ``i``
and A-eigenvalue ``j`` with the largest products until ``keep_mass`` of the total is reached. On
the two 1-D spectra this shows as: the G directions that keep at least one pair (``rank_out``),
the A directions that keep at least one pair (``rank_in``) and the smallest kept product ``tau``
(every pair with a larger product is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workers.curvature.selection import keep_counts
from workers.report.inputs import Spectrum


@dataclass(frozen=True)
class Cutoff:
    keep_mass: float
    tau: float | None  # None when nothing is kept
    rank_in: int  # A directions used (of len(a_values))
    rank_out: int  # G directions used (of len(g_values))
    kept_pairs: int


def descending(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return np.sort(v)[::-1]


def cutoff(spectrum: Spectrum, keep_mass: float | None = None) -> Cutoff:
    """The selection's cut for ``keep_mass`` (default: the spectrum's own)."""
    rho = spectrum.keep_mass if keep_mass is None else keep_mass
    g = descending(spectrum.g_values)
    a = descending(spectrum.a_values)
    k = keep_counts(torch.from_numpy(g.copy()), torch.from_numpy(a.copy()), rho).numpy()
    rows = np.nonzero(k > 0)[0]
    tau = float(min(g[i] * a[k[i] - 1] for i in rows)) if rows.size else None
    return Cutoff(
        keep_mass=float(rho),
        tau=tau,
        rank_in=int(k.max()) if k.size else 0,
        rank_out=int(rows.size),
        kept_pairs=int(k.sum()),
    )
