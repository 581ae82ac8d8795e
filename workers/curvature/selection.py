"""Curvature-mass selection: which eigen-pairs ``(i, j)`` of ``G ⊗ A`` an edit keeps.

Component ``(i, j)`` has mass ``p_ij = λ_i μ_j`` (``λ`` eigenvalues of ``G``, ``μ`` of ``A``, both
descending, >= 0); the total is ``(Σλ)(Σμ)``. For ``keep_mass`` = ρ in (0, 1) the kept set is the
shortest prefix of all pairs sorted by product descending whose mass reaches ``ρ · total``.

Tie handling (exact definition): pairs are ordered by product descending, and pairs with equal
products by row ``i`` ascending, then column ``j`` ascending (row-major). The kept set is the
shortest prefix of that order reaching the target. Equivalently: with ``τ*`` the largest product
value ``τ`` such that the mass of ``{p >= τ}`` reaches the target, every pair with ``p > τ*`` is
kept, and of the pairs with ``p == τ*`` only as many as needed, taken in row-major order.
Products are computed as float64 ``λ_i * μ_j`` and sums in float64.

ρ = 1 keeps every pair, including zero-mass ones (so the edit is the identity). If the total mass
is zero and ρ < 1, nothing is kept.

Because the spectra are sorted, ``{p >= τ}`` is a staircase: row ``i`` keeps a prefix of
``k_i(τ)`` columns (one ``searchsorted`` for all rows), and its mass is ``Σ_i λ_i · prefix_μ[k_i]``.
The search runs in float64 NumPy on the host — the spectra are only ``m + n`` numbers, and a
dozen tiny device kernels per step cost more than the arithmetic. ``τ*`` is found in two phases:
bisection over the bit patterns of positive float64 values (bracketed by the smallest and largest
positive products) until the bracket holds at most a few thousand products, then those products
are listed and the bisection continues over their sorted distinct values. Each step is
O(m log n); the whole search is O((m + n) log) with no per-pair work. Only the final mask is
O(m n), and callers that need statistics can use the counts instead (``stats_from_counts``).

EK-FAC scores ``s_ij`` (any non-negative matrix) are selected by ``score_mask`` with the same rule
and tie order, by one sort (see the section at the end of this file).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Phase 2 starts once the bracket holds at most this many products (per row count summed).
_LIST_AT_MOST = 4096


def _check_spectrum(values: torch.Tensor, label: str) -> np.ndarray:
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"expected {label} as a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    v = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not bool(np.isfinite(v).all()):
        raise ValueError(f"expected finite {label}")
    if bool((v < 0).any()):
        raise ValueError(f"expected {label} >= 0 (clamp eigenvalues first), got min {float(v.min())}")
    if v.size > 1 and bool((v[1:] > v[:-1]).any()):
        raise ValueError(f"expected {label} sorted in descending order")
    return v


def _check_keep_mass(keep_mass: float) -> float:
    rho = float(keep_mass)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"expected keep_mass in (0, 1], got {keep_mass}")
    return rho


def _from_bits(bits: int) -> float:
    return float(np.array(bits, dtype=np.int64).view(np.float64))


def _to_bits(value: float) -> int:
    return int(np.array(value, dtype=np.float64).view(np.int64))


class _Staircase:
    """Counts and masses of ``{(i, j): λ_i μ_j >= τ}`` for sorted float64 spectra (NumPy)."""

    def __init__(self, lam: np.ndarray, mu: np.ndarray) -> None:
        self.lam = lam
        self.mu = mu
        self.mu_asc = np.ascontiguousarray(mu[::-1])
        self.n = mu.size
        self.prefix = np.concatenate([np.zeros(1), np.cumsum(mu)])

    def _count_ge_value(self, v: np.ndarray) -> np.ndarray:
        """Number of μ >= v, elementwise."""
        return self.n - np.searchsorted(self.mu_asc, v, side="left")

    def counts(self, tau: float) -> np.ndarray:
        """k_i = #{j : fl(λ_i μ_j) >= τ} for a positive float τ (int64, shape (m,))."""
        lam, mu, n = self.lam, self.mu, self.n
        with np.errstate(divide="ignore"):
            q = tau / lam  # λ_i = 0 -> inf -> count 0
        k = self._count_ge_value(q)
        # The division can round across a value block; fix by testing the products themselves
        # (rounded products are monotone in μ, and equal μ give equal products).
        for _ in range(2):
            last = mu[np.maximum(k - 1, 0)]
            nxt = mu[np.minimum(k, n - 1)]
            too_many = (k > 0) & (lam * last < tau)
            too_few = (k < n) & (lam * nxt >= tau)
            if not (too_many.any() or too_few.any()):
                break
            k = k.copy()
            k[too_many] = self._count_ge_value(np.nextafter(last[too_many], np.inf))  # #{μ > last}
            k[too_few] = self._count_ge_value(nxt[too_few])
        return k

    def mass(self, k: np.ndarray) -> float:
        return float((self.lam * self.prefix[k]).sum())


def _products_between(stairs: _Staircase, k_lo: np.ndarray, k_hi: np.ndarray) -> np.ndarray:
    """Sorted distinct products of the pairs counted at ``lo`` but not at ``hi`` (cols k_hi..k_lo)."""
    width = k_lo - k_hi
    rows = np.repeat(np.arange(width.size), width)
    starts = np.cumsum(width) - width
    cols = k_hi[rows] + (np.arange(rows.size) - starts[rows])
    return np.unique(stairs.lam[rows] * stairs.mu[cols])


def _keep_counts(lam: np.ndarray, mu: np.ndarray, rho: float) -> np.ndarray:
    m, n = lam.size, mu.size
    if rho >= 1.0:
        return np.full(m, n, dtype=np.int64)
    target = rho * (float(lam.sum()) * float(mu.sum()))
    if target <= 0.0:
        return np.zeros(m, dtype=np.int64)
    stairs = _Staircase(lam, mu)

    def ok(k: np.ndarray) -> bool:
        return stairs.mass(k) >= target

    # Invariant: mass(>= lo) >= target > mass(>= hi); k_lo, k_hi the counts there.
    hi = _to_bits(float(lam[0] * mu[0])) + 1
    k_hi = np.zeros(m, dtype=np.int64)
    pos_lam, pos_mu = lam[lam > 0], mu[mu > 0]
    lo = _to_bits(float(pos_lam[-1] * pos_mu[-1]))  # smallest positive product
    k_lo = stairs.counts(_from_bits(lo))
    if not ok(k_lo):  # ρ within rounding of 1: start from the smallest positive float
        lo, k_lo = 1, stairs.counts(_from_bits(1))
    while hi - lo > 1 and int((k_lo - k_hi).sum()) > _LIST_AT_MOST:
        mid = lo + (hi - lo) // 2
        k_mid = stairs.counts(_from_bits(mid))
        if ok(k_mid):
            lo, k_lo = mid, k_mid
        else:
            hi, k_hi = mid, k_mid
    # Phase 2: τ* is one of the listed products (the smallest one has the same set as lo). A
    # bracket one bit wide holds a single value however many pairs share it (no listing needed).
    values = np.array([_from_bits(lo)]) if hi - lo == 1 else _products_between(stairs, k_lo, k_hi)
    a, b = 0, values.size  # values[a] ok; values[b] (or hi) not ok
    k_gt = k_hi
    while b - a > 1:
        c = (a + b) // 2
        k_c = stairs.counts(float(values[c]))
        if ok(k_c):
            a, k_lo = c, k_c
        else:
            b, k_gt = c, k_c
    tau = float(values[a])
    k_ge = k_lo
    mass_gt = stairs.mass(k_gt)
    ties = k_ge - k_gt
    n_ties = int(ties.sum())
    # Fewest ties r (each worth τ) with mass_gt + r τ >= target, checked against rounding.
    r = max(math.ceil((target - mass_gt) / tau), 1)
    if mass_gt + (r - 1) * tau >= target:
        r -= 1
    if mass_gt + r * tau < target:
        r += 1
    r = max(min(r, n_ties), 0)
    before = np.cumsum(ties) - ties
    take = np.minimum(np.maximum(r - before, 0), ties)
    return k_gt + take


def keep_counts(eig_out: torch.Tensor, eig_in: torch.Tensor, keep_mass: float) -> torch.Tensor:
    """Staircase form of the selection: int64 ``k`` of shape (m,), row ``i`` keeps columns ``< k[i]``."""
    lam = _check_spectrum(eig_out, "eig_out")
    mu = _check_spectrum(eig_in, "eig_in")
    k = _keep_counts(lam, mu, _check_keep_mass(keep_mass))
    return torch.from_numpy(k).to(eig_out.device)


def mask_from_counts(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Bool mask (len(counts), n) with row ``i`` True in columns ``< counts[i]``."""
    if counts.device.type == "cpu":
        # Zeroed (lazily mapped) memory with only the kept prefixes written: several times faster
        # than a broadcast torch compare, which writes all m n bools.
        out = np.zeros((counts.numel(), n), dtype=np.bool_)
        for i, k in enumerate(counts.tolist()):
            if k:
                out[i, :k] = True
        return torch.from_numpy(out)
    return torch.arange(n, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)


def curvature_mask(eig_out: torch.Tensor, eig_in: torch.Tensor, keep_mass: float) -> torch.Tensor:
    """Bool mask (len(eig_out), len(eig_in)) of the kept pairs (see module docstring)."""
    return mask_from_counts(keep_counts(eig_out, eig_in, keep_mass), eig_in.numel())


def selection_stats(mask: torch.Tensor, eig_out: torch.Tensor, eig_in: torch.Tensor) -> dict[str, float | int]:
    """kept_pairs, total_pairs, kept_mass_fraction, rank_out (rows used), rank_in (columns used)."""
    m, n = eig_out.numel(), eig_in.numel()
    if mask.shape != (m, n):
        raise ValueError(f"expected mask of shape ({m}, {n}), got {tuple(mask.shape)}")
    lam = eig_out.detach().to(device=mask.device, dtype=torch.float64)
    mu = eig_in.detach().to(device=mask.device, dtype=torch.float64)
    total = float(lam.sum() * mu.sum())
    kept = float(lam @ (mask.to(torch.float64) @ mu))
    return {
        "kept_pairs": int(mask.sum()),
        "total_pairs": m * n,
        "kept_mass_fraction": kept / total if total > 0 else 1.0 if bool(mask.all()) else 0.0,
        "rank_out": int(mask.any(dim=1).sum()),
        "rank_in": int(mask.any(dim=0).sum()),
    }


def stats_from_counts(counts: torch.Tensor, eig_out: torch.Tensor, eig_in: torch.Tensor) -> dict[str, float | int]:
    """``selection_stats`` of the staircase mask ``counts`` describes, in O(m + n) (no mask built)."""
    m, n = eig_out.numel(), eig_in.numel()
    if counts.shape != (m,):
        raise ValueError(f"expected counts of shape ({m},), got {tuple(counts.shape)}")
    k = counts.detach().cpu().numpy().astype(np.int64)
    if bool((k < 0).any()) or bool((k > n).any()):
        raise ValueError(f"expected counts in [0, {n}], got min {int(k.min())}, max {int(k.max())}")
    lam = eig_out.detach().to(device="cpu", dtype=torch.float64).numpy()
    mu = eig_in.detach().to(device="cpu", dtype=torch.float64).numpy()
    total = float(lam.sum()) * float(mu.sum())
    kept = float((lam * np.concatenate([np.zeros(1), np.cumsum(mu)])[k]).sum())
    kept_pairs = int(k.sum())
    return {
        "kept_pairs": kept_pairs,
        "total_pairs": m * n,
        "kept_mass_fraction": kept / total if total > 0 else 1.0 if kept_pairs == m * n else 0.0,
        "rank_out": int((k > 0).sum()),
        "rank_in": int(k.max()),
    }


# --- general score matrices (EK-FAC) -------------------------------------------------------------
#
# ``score_mask`` applies the same keep-mass rule to an arbitrary non-negative score matrix ``s``
# (EK-FAC's ``s_ij``), which has no staircase structure. Exact rule: the pairs are ordered by score
# descending, equal scores by row ``i`` ascending then column ``j`` ascending (row-major) -- the
# tie rule of ``curvature_mask``. ``c_k`` is the float64 running sum (sequential, in that order) of
# the first ``k`` scores and the total is ``c_{mn}``; the kept set is the shortest prefix with
# ``c_k >= ρ · total``. ρ = 1 keeps every pair; a zero total with ρ < 1 keeps nothing. Cost: one
# O(mn log mn) sort on the host.


def _check_scores(scores: torch.Tensor) -> np.ndarray:
    if scores.dim() != 2 or scores.numel() == 0:
        raise ValueError(f"expected scores as a non-empty 2-D tensor, got shape {tuple(scores.shape)}")
    s = scores.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not bool(np.isfinite(s).all()):
        raise ValueError("expected finite scores")
    if bool((s < 0).any()):
        raise ValueError(f"expected scores >= 0, got min {float(s.min())}")
    return s


def score_mask(scores: torch.Tensor, keep_mass: float) -> torch.Tensor:
    """Bool mask (m, n) of the pairs kept from the score matrix ``scores`` (rule above)."""
    s = _check_scores(scores)
    rho = _check_keep_mass(keep_mass)
    m, n = s.shape
    flat = s.reshape(-1)
    keep = np.zeros(flat.size, dtype=np.bool_)
    if rho >= 1.0:
        keep[:] = True
    else:
        order = np.argsort(-flat, kind="stable")  # stable: equal scores stay in row-major order
        running = np.cumsum(flat[order])
        target = rho * float(running[-1])
        if target > 0.0:
            k = int(np.searchsorted(running, target, side="left")) + 1  # first prefix reaching it
            keep[order[: min(k, flat.size)]] = True
    return torch.from_numpy(keep.reshape(m, n)).to(scores.device)


def score_stats(mask: torch.Tensor, scores: torch.Tensor) -> dict[str, float | int]:
    """``selection_stats`` for a score-ranked mask: the kept mass fraction is Σ kept s / Σ s."""
    if mask.shape != scores.shape:
        raise ValueError(f"expected mask of shape {tuple(scores.shape)}, got {tuple(mask.shape)}")
    s = scores.detach().to(device=mask.device, dtype=torch.float64)
    total = float(s.sum())
    kept = float(s[mask].sum())
    m, n = scores.shape
    return {
        "kept_pairs": int(mask.sum()),
        "total_pairs": m * n,
        "kept_mass_fraction": kept / total if total > 0 else 1.0 if bool(mask.all()) else 0.0,
        "rank_out": int(mask.any(dim=1).sum()),
        "rank_in": int(mask.any(dim=0).sum()),
    }
