"""factor_statistics against brute force: numerical rank, trace and extreme eigenvalues of a factor mean."""

from __future__ import annotations

import torch

from workers.curvature.eigen import eigendecompose
from workers.curvature.factor_stats import factor_statistics, few_tokens


def test_statistics_match_brute_force_on_a_rank_deficient_factor() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 20, generator=gen, dtype=torch.float64)  # 7 tokens in 20 dimensions
    total = (rows.T @ rows).float()
    e = eigendecompose(total, 7)
    s = factor_statistics(e.values, 7)
    mean = (rows.T @ rows) / 7
    assert s["dim"] == 20 and s["tokens"] == 7 and s["tokens_per_dim"] == 0.35
    assert s["rank"] == int(torch.linalg.matrix_rank(mean)) == 7
    assert abs(s["trace"] - float(torch.trace(mean))) <= 1e-5 * float(torch.trace(mean))
    ev = torch.linalg.eigvalsh(mean)
    assert abs(s["top"] - float(ev[-1])) <= 1e-5 * float(ev[-1])
    assert abs(s["bottom"]) <= 1e-5 * float(ev[-1])  # the null space: ~0 (clamped >= 0)
    full = factor_statistics(torch.linspace(1.0, 2.0, 5), None)
    assert full["rank"] == 5 and full["tokens_per_dim"] is None and full["bottom"] == 1.0


def test_few_tokens_threshold_is_ten_per_dimension() -> None:
    assert few_tokens(639, 64) and not few_tokens(640, 64)
