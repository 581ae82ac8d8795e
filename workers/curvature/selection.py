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
``k_i(τ)`` columns, found with ``searchsorted``. ``τ*`` is found by bisection over the bit
patterns of positive float64 values (64 fixed steps, each O(m log n), all on the device: no
host round-trips and no per-pair Python loop).
"""

from __future__ import annotations

import torch


def _check_spectrum(values: torch.Tensor, label: str) -> torch.Tensor:
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"expected {label} as a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    v = values.detach().to(torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"expected finite {label}")
    if bool((v < 0).any()):
        raise ValueError(f"expected {label} >= 0 (clamp eigenvalues first), got min {float(v.min())}")
    if v.numel() > 1 and bool((v[1:] > v[:-1]).any()):
        raise ValueError(f"expected {label} sorted in descending order")
    return v


def _check_keep_mass(keep_mass: float) -> float:
    rho = float(keep_mass)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"expected keep_mass in (0, 1], got {keep_mass}")
    return rho


def _from_bits(bits: torch.Tensor) -> torch.Tensor:
    return bits.view(torch.float64)


class _Staircase:
    """Counts and masses of ``{(i, j): λ_i μ_j >= τ}`` for sorted spectra."""

    def __init__(self, lam: torch.Tensor, mu: torch.Tensor) -> None:
        self.lam = lam
        self.mu = mu
        self.mu_asc = mu.flip(0).contiguous()
        self.n = mu.numel()
        self.prefix = torch.cat([mu.new_zeros(1), torch.cumsum(mu, 0)])

    def _count_ge_value(self, v: torch.Tensor, right: bool = False) -> torch.Tensor:
        """Per row: number of μ >= v (``right=True``: number of μ > v)."""
        return self.n - torch.searchsorted(self.mu_asc, v.contiguous(), right=right)

    def counts(self, tau: torch.Tensor) -> torch.Tensor:
        """k_i = #{j : fl(λ_i μ_j) >= τ} for a positive scalar τ (shape (1,))."""
        lam, mu, n = self.lam, self.mu, self.n
        q = torch.where(lam > 0, tau / lam, torch.full_like(lam, float("inf")))
        k = self._count_ge_value(q)
        # The division can round across a value block; fix by testing the products themselves
        # (rounded products are monotone in μ, and equal μ give equal products). "Too many" and
        # "too few" exclude each other, so one searchsorted answers both per round.
        inf = torch.full_like(lam[:1], float("inf"))
        for _ in range(2):
            last = mu[(k - 1).clamp(min=0)]
            nxt = mu[k.clamp(max=n - 1)]
            too_many = (k > 0) & (lam * last < tau)
            too_few = (k < n) & (lam * nxt >= tau)
            # #{μ > last} == #{μ >= nextafter(last, inf)}
            fixed = self._count_ge_value(torch.cat([torch.nextafter(last, inf.expand_as(last)), nxt]))
            k = torch.where(too_many, fixed[: lam.numel()], torch.where(too_few, fixed[lam.numel() :], k))
        return k

    def mass(self, k: torch.Tensor) -> torch.Tensor:
        return (self.lam * self.prefix[k]).sum()


def keep_counts(eig_out: torch.Tensor, eig_in: torch.Tensor, keep_mass: float) -> torch.Tensor:
    """Staircase form of the selection: int64 ``k`` of shape (m,), row ``i`` keeps columns ``< k[i]``."""
    lam = _check_spectrum(eig_out, "eig_out")
    mu = _check_spectrum(eig_in, "eig_in").to(lam.device)
    rho = _check_keep_mass(keep_mass)
    m, n = lam.numel(), mu.numel()
    if rho >= 1.0:
        return torch.full((m,), n, dtype=torch.long, device=lam.device)
    stairs = _Staircase(lam, mu)
    total = lam.sum() * mu.sum()
    target = rho * total
    if float(target) <= 0.0:
        return torch.zeros(m, dtype=torch.long, device=lam.device)

    # Bisection over float64 bit patterns: invariant mass(>= lo) >= target > mass(>= hi).
    pmax = (lam[:1] * mu[:1]).contiguous()
    lo = torch.zeros(1, dtype=torch.long, device=lam.device)
    hi = pmax.view(torch.long) + 1
    for _ in range(64):
        mid = lo + torch.div(hi - lo, 2, rounding_mode="floor")  # no int64 overflow
        mid = torch.maximum(mid, torch.ones_like(mid))  # τ > 0
        ok = stairs.mass(stairs.counts(_from_bits(mid))) >= target
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    tau = _from_bits(lo.clone())
    k_ge = stairs.counts(tau)
    k_gt = stairs.counts(_from_bits(lo + 1))
    mass_gt = stairs.mass(k_gt)
    ties = k_ge - k_gt
    n_ties = ties.sum()
    # Fewest ties r (each worth τ) with mass_gt + r τ >= target, checked against rounding.
    r = torch.ceil((target - mass_gt) / tau).clamp(min=1)
    r = torch.where(mass_gt + (r - 1) * tau >= target, r - 1, r)
    r = torch.where(mass_gt + r * tau < target, r + 1, r)
    r = torch.minimum(r.to(torch.long), n_ties).clamp(min=0)
    before = torch.cumsum(ties, 0) - ties
    take = torch.minimum((r - before).clamp(min=0), ties)
    return k_gt + take


def curvature_mask(eig_out: torch.Tensor, eig_in: torch.Tensor, keep_mass: float) -> torch.Tensor:
    """Bool mask (len(eig_out), len(eig_in)) of the kept pairs (see module docstring)."""
    k = keep_counts(eig_out, eig_in, keep_mass)
    cols = torch.arange(eig_in.numel(), device=k.device)
    return cols.unsqueeze(0) < k.unsqueeze(1)


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
