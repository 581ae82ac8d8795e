"""curvature_mask / keep_counts / selection_stats against a sort-everything brute force."""

from __future__ import annotations

import pytest
import torch

from workers.curvature import selection
from workers.curvature.selection import (
    _Staircase,
    curvature_mask,
    keep_counts,
    mask_from_counts,
    selection_stats,
    stats_from_counts,
)


def brute_force_mask(lam: torch.Tensor, mu: torch.Tensor, rho: float) -> torch.Tensor:
    """Sort all products (ties row-major), keep the shortest prefix reaching rho * total."""
    lam64, mu64 = lam.double(), mu.double()
    m, n = lam64.numel(), mu64.numel()
    if rho >= 1.0:
        return torch.ones(m, n, dtype=torch.bool)
    prod = (lam64[:, None] * mu64[None, :]).reshape(-1)
    target = rho * (lam64.sum() * mu64.sum())
    if target <= 0:
        return torch.zeros(m, n, dtype=torch.bool)
    order = torch.sort(-prod, stable=True).indices  # stable: equal products stay row-major
    csum = torch.cumsum(prod[order], 0)
    k = int(torch.nonzero(csum >= target)[0]) + 1
    mask = torch.zeros(m * n, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view(m, n)


def spectrum(n: int, gen: torch.Generator, zeros: int = 0, ints: bool = False) -> torch.Tensor:
    if ints:
        v = torch.randint(0, 4, (n,), generator=gen).double()
    else:
        v = torch.rand(n, generator=gen, dtype=torch.float64) ** 3
    if zeros:
        v[:zeros] = 0.0
    return torch.sort(v, descending=True).values


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("rho", [1e-6, 0.05, 0.3, 0.6, 0.9, 0.999])
def test_matches_brute_force_random_spectra(seed: int, rho: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    m, n = int(torch.randint(1, 40, (1,), generator=gen)), int(torch.randint(1, 60, (1,), generator=gen))
    lam, mu = spectrum(m, gen), spectrum(n, gen)
    assert torch.equal(curvature_mask(lam, mu, rho), brute_force_mask(lam, mu, rho))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("rho", [0.01, 0.25, 0.5, 0.77, 0.95])
def test_ties_and_zero_eigenvalues(seed: int, rho: float) -> None:
    # Small integer spectra: many equal products, exact float64 arithmetic, zero eigenvalues.
    gen = torch.Generator().manual_seed(100 + seed)
    lam = spectrum(17, gen, zeros=3, ints=True)
    mu = spectrum(23, gen, zeros=5, ints=True)
    if float(lam.sum() * mu.sum()) == 0:
        lam[0] = 1.0
        mu[0] = 1.0
    got = curvature_mask(lam, mu, rho)
    want = brute_force_mask(lam, mu, rho)
    assert torch.equal(got, want)


def test_all_equal_products_take_row_major_prefix() -> None:
    lam = torch.ones(3, dtype=torch.float64)
    mu = torch.ones(4, dtype=torch.float64)
    mask = curvature_mask(lam, mu, 0.5)  # 12 equal pairs, need 6, taken row-major
    want = torch.zeros(3, 4, dtype=torch.bool)
    want.view(-1)[:6] = True
    assert torch.equal(mask, want)


def test_rho_one_keeps_everything_including_zero_mass_pairs() -> None:
    lam = torch.tensor([3.0, 1.0, 0.0])
    mu = torch.tensor([2.0, 0.0])
    assert bool(curvature_mask(lam, mu, 1.0).all())


def test_tiny_rho_keeps_the_top_pair_only() -> None:
    gen = torch.Generator().manual_seed(0)
    lam, mu = spectrum(30, gen), spectrum(50, gen)
    mask = curvature_mask(lam, mu, 1e-9)
    assert int(mask.sum()) == 1 and bool(mask[0, 0])


def test_zero_total_mass_keeps_nothing_below_one() -> None:
    z = torch.zeros(4)
    assert not bool(curvature_mask(z, torch.ones(3), 0.5).any())
    assert bool(curvature_mask(z, torch.ones(3), 1.0).all())


def test_mask_is_a_staircase_and_counts_agree() -> None:
    gen = torch.Generator().manual_seed(5)
    lam, mu = spectrum(64, gen), spectrum(96, gen)
    k = keep_counts(lam, mu, 0.6)
    mask = curvature_mask(lam, mu, 0.6)
    assert torch.equal(mask.sum(1), k)
    assert bool((k[1:] <= k[:-1]).all())  # rows with smaller λ keep no more columns


def test_float32_inputs_on_the_same_products() -> None:
    gen = torch.Generator().manual_seed(9)
    lam, mu = spectrum(50, gen).float(), spectrum(70, gen).float()
    assert torch.equal(curvature_mask(lam, mu, 0.42), brute_force_mask(lam, mu, 0.42))


def test_selection_stats() -> None:
    lam = torch.tensor([4.0, 2.0, 1.0])
    mu = torch.tensor([3.0, 1.0])
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    stats = selection_stats(mask, lam, mu)
    assert stats == {
        "kept_pairs": 3,
        "total_pairs": 6,
        "kept_mass_fraction": pytest.approx((12 + 4 + 6) / (7 * 4)),
        "rank_out": 2,
        "rank_in": 2,
    }
    got = selection_stats(curvature_mask(lam, mu, 0.6), lam, mu)
    assert got["kept_mass_fraction"] >= 0.6


@pytest.mark.parametrize(
    ("lam", "mu", "rho", "match"),
    [
        (torch.tensor([1.0, 2.0]), torch.ones(2), 0.5, "descending"),
        (torch.tensor([1.0, -1.0]), torch.ones(2), 0.5, ">= 0"),
        (torch.ones(2, 2), torch.ones(2), 0.5, "1-D"),
        (torch.ones(2), torch.ones(2), 0.0, r"\(0, 1\]"),
        (torch.ones(2), torch.ones(2), 1.5, r"\(0, 1\]"),
    ],
)
def test_validation(lam: torch.Tensor, mu: torch.Tensor, rho: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        curvature_mask(lam, mu, rho)


@pytest.mark.parametrize("seed", range(6))
def test_staircase_counts_exact_at_product_thresholds(seed: int) -> None:
    # τ equal to an actual product is where τ / λ_i rounds across a value block; counts must
    # still equal #{j : λ_i μ_j >= τ} computed on the products themselves.
    gen = torch.Generator().manual_seed(seed)
    lam = torch.sort(torch.rand(40, generator=gen, dtype=torch.float64), descending=True).values
    mu = torch.sort(torch.rand(60, generator=gen, dtype=torch.float64) * 3, descending=True).values
    mu[10:20] = mu[10]  # a block of ties
    prod = lam[:, None] * mu[None, :]
    stairs = _Staircase(lam.numpy(), mu.numpy())
    for idx in torch.randint(0, prod.numel(), (60,), generator=gen):
        tau = prod.reshape(-1)[idx]
        assert torch.equal(torch.from_numpy(stairs.counts(float(tau))), (prod >= tau).sum(1))


@pytest.mark.parametrize("list_at_most", [1, 7, 64, 4096])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ints", [False, True])
def test_both_search_phases_match_brute_force(
    monkeypatch: pytest.MonkeyPatch, list_at_most: int, seed: int, ints: bool
) -> None:
    # The bit-pattern bisection runs until the bracket lists at most ``_LIST_AT_MOST`` products;
    # a small limit makes phase 1 do nearly all the work, the default leaves it to phase 2.
    monkeypatch.setattr(selection, "_LIST_AT_MOST", list_at_most)
    gen = torch.Generator().manual_seed(300 + seed)
    lam = spectrum(90, gen, zeros=4, ints=ints)
    mu = spectrum(130, gen, zeros=7, ints=ints)
    lam[0] = max(float(lam[0]), 1.0)
    mu[0] = max(float(mu[0]), 1.0)
    for rho in (1e-7, 0.2, 0.6, 0.93, 0.99999):
        assert torch.equal(curvature_mask(lam, mu, rho), brute_force_mask(lam, mu, rho)), rho


@pytest.mark.parametrize("rho", [0.01, 0.5, 0.9])
def test_large_spectra_match_brute_force(rho: float) -> None:
    # 300 x 700 = 210k pairs: the default limit is exceeded, so both phases run.
    gen = torch.Generator().manual_seed(11)
    lam = torch.sort(torch.rand(300, generator=gen, dtype=torch.float64) ** 4, descending=True).values
    mu = torch.sort(torch.rand(700, generator=gen, dtype=torch.float64) ** 2, descending=True).values
    assert torch.equal(curvature_mask(lam, mu, rho), brute_force_mask(lam, mu, rho))


@pytest.mark.parametrize("seed", range(5))
def test_stats_from_counts_equal_stats_of_the_mask(seed: int) -> None:
    gen = torch.Generator().manual_seed(40 + seed)
    lam, mu = spectrum(33, gen, zeros=2), spectrum(47, gen, zeros=3)
    for rho in (1e-9, 0.3, 0.8, 1.0):
        k = keep_counts(lam, mu, rho)
        mask = mask_from_counts(k, mu.numel())
        assert torch.equal(mask, brute_force_mask(lam, mu, rho))
        want = selection_stats(mask, lam, mu)
        got = stats_from_counts(k, lam, mu)
        assert got == {**want, "kept_mass_fraction": pytest.approx(want["kept_mass_fraction"], rel=1e-12)}


def test_stats_from_counts_validates() -> None:
    lam, mu = torch.ones(3), torch.ones(4)
    with pytest.raises(ValueError, match=r"expected counts of shape \(3,\)"):
        stats_from_counts(torch.zeros(4, dtype=torch.long), lam, mu)
    with pytest.raises(ValueError, match=r"in \[0, 4\]"):
        stats_from_counts(torch.tensor([5, 0, 0]), lam, mu)
