"""Eigenbases of K-FAC factors: ``mean = U diag(values) U^T`` with values descending, >= 0."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from workers.curvature.factors import KFACFactors


@dataclass
class Eigen:
    """Eigenvalues (descending, clamped >= 0) and matching eigenvector columns."""

    values: torch.Tensor
    vectors: torch.Tensor

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        if self.values.dim() != 1 or self.vectors.shape != (n, n):
            raise ValueError(
                f"expected values (n,) and vectors (n, n), got {tuple(self.values.shape)} "
                f"and {tuple(self.vectors.shape)}"
            )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Eigen:
        return Eigen(self.values.to(device=device, dtype=dtype), self.vectors.to(device=device, dtype=dtype))


def eigendecompose(
    sum_matrix: torch.Tensor,
    count: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Eigen:
    """Eigendecomposition of ``sum_matrix / count`` (symmetrised) in ``dtype`` on ``device``."""
    if sum_matrix.dim() != 2 or sum_matrix.shape[0] != sum_matrix.shape[1]:
        raise ValueError(f"expected a square factor, got shape {tuple(sum_matrix.shape)}")
    if count <= 0:
        raise ValueError(f"expected a positive token count, got {count} (no valid positions were seen)")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"expected dtype float32 or float64, got {dtype}")
    m = sum_matrix.to(device=device if device is not None else sum_matrix.device, dtype=dtype) / count
    m = 0.5 * (m + m.T)
    values, vectors = torch.linalg.eigh(m)
    values = values.flip(0).clamp_min(0)
    vectors = vectors.flip(1)
    return Eigen(values.contiguous(), vectors.contiguous())


def eigenbases(
    factors: Mapping[str, KFACFactors],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, tuple[Eigen, Eigen]]:
    """(G-eigen, A-eigen) per target; an ``A_sum`` shared by several targets is decomposed once."""
    a_cache: dict[int, Eigen] = {}
    out: dict[str, tuple[Eigen, Eigen]] = {}
    for name, f in factors.items():
        key = id(f.A_sum)
        if key not in a_cache:
            a_cache[key] = eigendecompose(f.A_sum, f.count, dtype, device)
        out[name] = (eigendecompose(f.G_sum, f.count, dtype, device), a_cache[key])
    return out
