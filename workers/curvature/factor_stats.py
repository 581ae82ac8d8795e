"""Statistics of one K-FAC factor, to judge whether the calibration was large enough.

For a factor mean ``M = sum / count`` (dimension ``d``) with eigenvalues ``values`` (descending):

* ``tokens_per_dim = count / d``;
* ``rank``: eigenvalues above ``values[0] * d * eps(float32)`` (the usual numerical-rank
  tolerance; a mean of ``count`` outer products has rank <= ``count``);
* ``trace = sum(values)``, ``top`` / ``bottom`` eigenvalues.

A factor with fewer tokens than dimensions is rank-deficient: its null space has zero curvature,
so any ``keep_mass < 1`` removes it from the weights. ``MIN_TOKENS_PER_DIM = 10`` is the floor
below which a calibration is flagged (``few_tokens``).
"""

from __future__ import annotations

from typing import Any

import torch

MIN_TOKENS_PER_DIM = 10


def factor_statistics(values: torch.Tensor, count: int | None) -> dict[str, Any]:
    """Statistics of a factor from its eigenvalues (any order) and token count (None when unknown)."""
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"expected eigenvalues of shape (d,), got {tuple(values.shape)}")
    v = values.detach().to("cpu", torch.float64).sort(descending=True).values
    d = int(v.numel())
    top = float(v[0])
    tol = top * d * float(torch.finfo(torch.float32).eps)
    return {
        "dim": d,
        "tokens": count,
        "tokens_per_dim": None if count is None else round(count / d, 4),
        "rank": int((v > tol).sum()) if top > 0 else 0,
        "trace": float(v.clamp_min(0).sum()),
        "top": top,
        "bottom": float(v[-1]),
    }


def few_tokens(tokens: int, largest_dim: int) -> bool:
    """True when ``tokens`` < ``MIN_TOKENS_PER_DIM`` x the largest edited dimension."""
    return tokens < MIN_TOKENS_PER_DIM * largest_dim
