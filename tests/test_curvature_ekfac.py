"""EK-FAC: the eigenvalue correction against a per-position autograd oracle, and the score
selection (``score_mask``) against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.per_position_oracle import lm_rows
from tests.test_curvature_factors import make_batches
from tests.tiny_models import build_model
from workers.curvature import collect_factors, eigenbases
from workers.curvature.edit import apply_edit
from workers.curvature.ekfac import EigenCorrection, collect_corrections
from workers.curvature.selection import curvature_mask, score_mask, score_stats
from workers.curvature.targets import resolve_targets

V = 48


def correction_oracle(model, batches, targets, eigens, fisher: str, seed: int, samples: int = 1) -> dict:
    """s_ij summed position by position as (U_Gᵀ g aᵀ U_A)_ij² in float64, from the per-position autograd oracle."""
    S = {t.name: torch.zeros(t.out_features, t.in_features, dtype=torch.float64) for t in targets}
    count = 0
    for a, gs in lm_rows(model, batches, targets, fisher, seed=seed, samples=samples):
        for t in targets:
            g_eig, a_eig = eigens[t.name]
            ug, ua = g_eig.vectors.double(), a_eig.vectors.double()
            for g in gs:
                for g_t, a_t in zip(g[t.name], a[t.name], strict=True):
                    S[t.name] += (ug.T @ torch.outer(g_t, a_t) @ ua).square() / samples
        count += len(a[targets[0].name])
    return {name: EigenCorrection(s, count) for name, s in S.items()}


@pytest.mark.parametrize(
    ("family", "layers", "roles", "fisher", "samples"),
    [
        ("llama", [1, 2], ["gate", "up", "down"], "sampled", 1),
        ("gpt2", [-1], ["up", "down"], "empirical", 1),
        ("llama", [2], ["up"], "sampled", 3),
    ],
)
def test_correction_matches_per_position_oracle(family, layers, roles, fisher, samples) -> None:
    model = build_model(family, vocab_size=V, seed=3, layers=3)
    for p in model.parameters():
        p.requires_grad_(True)
    targets = resolve_targets(model, layers=layers, projections=roles)
    batches = make_batches()
    eigens = eigenbases(collect_factors(model, batches, targets, fisher=fisher, seed=5, samples=samples))
    got = collect_corrections(model, batches, targets, eigens, fisher=fisher, seed=5, samples=samples)
    want = correction_oracle(model, batches, targets, eigens, fisher, seed=5, samples=samples)
    for t in targets:
        assert got[t.name].count == want[t.name].count > 0
        assert got[t.name].S_sum.shape == (t.out_features, t.in_features)
        rel = float((got[t.name].S_sum.double() - want[t.name].S_sum).norm() / want[t.name].S_sum.norm())
        assert rel <= 1e-5, (t.name, rel)


def test_correction_row_and_column_sums_are_the_kfac_eigenvalues_on_one_position() -> None:
    # With one valid position the second moment factorises: s = λ μᵀ exactly (K-FAC = EK-FAC).
    model = build_model("llama", vocab_size=V, seed=1, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["down"])
    batch = [{"input_ids": torch.tensor([[5, 9]]), "attention_mask": torch.tensor([[1, 1]])}]
    eigens = eigenbases(collect_factors(model, batch, targets, fisher="empirical"))
    got = collect_corrections(model, batch, targets, eigens, fisher="empirical")
    g_eig, a_eig = eigens[targets[0].name]
    want = torch.outer(g_eig.values, a_eig.values)
    torch.testing.assert_close(got[targets[0].name].mean(), want, rtol=1e-4, atol=1e-6 * float(want.max()))


def brute_force_keep(scores: np.ndarray, rho: float) -> np.ndarray:
    """Pairs sorted by (-score, i, j); shortest prefix whose running float64 sum reaches ρ · total."""
    m, n = scores.shape
    pairs = sorted(itertools.product(range(m), range(n)), key=lambda ij: (-scores[ij], ij[0], ij[1]))
    running, sums = 0.0, []
    for ij in pairs:
        running += float(scores[ij])
        sums.append(running)
    keep = np.zeros((m, n), dtype=bool)
    if rho >= 1.0:
        return ~keep
    target = rho * sums[-1]
    if target <= 0:
        return keep
    for k, c in enumerate(sums):
        if c >= target:
            for ij in pairs[: k + 1]:
                keep[ij] = True
            break
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_score_mask_matches_brute_force_with_ties_and_zeros(seed: int) -> None:
    gen = np.random.default_rng(seed)
    m, n = gen.integers(1, 9), gen.integers(1, 9)
    scores = gen.integers(0, 4, size=(m, n)).astype(np.float64) * 0.25  # many ties and zeros
    if seed == 5:
        scores[:] = 0.0
    for rho in (0.05, 0.3, 0.5, 0.77, 0.99, 1.0):
        got = score_mask(torch.from_numpy(scores).float(), rho).numpy()
        np.testing.assert_array_equal(got, brute_force_keep(scores, rho), err_msg=f"rho={rho}")


def test_score_mask_on_a_rank_one_score_is_the_kfac_selection() -> None:
    gen = torch.Generator().manual_seed(0)
    lam = torch.rand(13, generator=gen, dtype=torch.float64).sort(descending=True).values
    mu = torch.rand(11, generator=gen, dtype=torch.float64).sort(descending=True).values
    for rho in (0.1, 0.5, 0.9):
        assert torch.equal(score_mask(torch.outer(lam, mu), rho), curvature_mask(lam, mu, rho))


def test_score_mask_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected scores >= 0"):
        score_mask(torch.tensor([[1.0, -1.0]]), 0.5)
    with pytest.raises(ValueError, match="finite"):
        score_mask(torch.tensor([[1.0, float("nan")]]), 0.5)
    with pytest.raises(ValueError, match="keep_mass"):
        score_mask(torch.ones(2, 2), 0.0)


def test_ekfac_edit_projects_onto_the_score_selected_pairs() -> None:
    model = build_model("llama", vocab_size=V, seed=2, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["up"])
    batches = make_batches()
    eigens = eigenbases(collect_factors(model, batches, targets, seed=1))
    corr = collect_corrections(model, batches, targets, eigens, seed=1)
    t = targets[0]
    w0 = t.module(model).weight.detach().clone()
    scores = {t.name: corr[t.name].mean()}
    (report,) = apply_edit(model, targets, eigens, 0.6, corrections=scores)
    g_eig, a_eig = eigens[t.name]
    mask = score_mask(scores[t.name], 0.6)
    want = g_eig.vectors @ ((g_eig.vectors.T @ w0 @ a_eig.vectors) * mask) @ a_eig.vectors.T
    torch.testing.assert_close(t.module(model).weight.detach(), want, rtol=1e-4, atol=1e-5)
    stats = score_stats(mask, scores[t.name])
    assert report.kept_pairs == stats["kept_pairs"] and report.kept_mass_fraction >= 0.6
