"""projection.project vs the explicit Kronecker form; eigendecompose; apply_edit invariances."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.tiny_models import build_model
from workers.curvature.edit import apply_edit
from workers.curvature.eigen import Eigen, eigenbases, eigendecompose
from workers.curvature.factors import KFACFactors, collect_factors
from workers.curvature.projection import project
from workers.curvature.selection import curvature_mask
from workers.curvature.targets import resolve_targets


def random_spd(n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, 3 * n, generator=gen, dtype=torch.float64)
    return x @ x.T


def vec(x: torch.Tensor) -> torch.Tensor:
    return x.T.reshape(-1)  # column-major vectorisation


@pytest.mark.parametrize("seed", range(4))
def test_projection_matches_kronecker_form(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    out_f, in_f = 5, 7
    g_eig = eigendecompose(random_spd(out_f, gen), 1, dtype=torch.float64)
    a_eig = eigendecompose(random_spd(in_f, gen), 1, dtype=torch.float64)
    w = torch.randn(out_f, in_f, generator=gen, dtype=torch.float64)
    mask = torch.rand(out_f, in_f, generator=gen) < 0.5  # any mask, not only staircases
    got = project(w, g_eig.vectors, a_eig.vectors, mask)
    kron = torch.kron(a_eig.vectors, g_eig.vectors)
    want = kron @ torch.diag(vec(mask).double()) @ kron.T @ vec(w)
    torch.testing.assert_close(vec(got), want)


def test_projection_returns_weight_dtype_and_full_mask_is_identity() -> None:
    gen = torch.Generator().manual_seed(0)
    g_eig = eigendecompose(random_spd(4, gen), 1)
    a_eig = eigendecompose(random_spd(6, gen), 1)
    w = torch.randn(4, 6, generator=gen).to(torch.bfloat16)
    half = torch.zeros(4, 6, dtype=torch.bool)
    half[:2] = True
    assert project(w, g_eig.vectors, a_eig.vectors, half).dtype == torch.bfloat16
    assert torch.equal(project(w, g_eig.vectors, a_eig.vectors, torch.ones(4, 6, dtype=torch.bool)), w)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((4, 6), (4, 4), (5, 5), (4, 6)), r"eigvecs_in of shape \(6, 6\), got \(5, 5\)"),
        (((4, 6), (6, 6), (6, 6), (4, 6)), r"eigvecs_out of shape \(4, 4\), got \(6, 6\)"),
        (((4, 6), (4, 4), (6, 6), (6, 4)), r"mask of shape \(4, 6\), got \(6, 4\)"),
    ],
)
def test_projection_validates_shapes(shapes, match: str) -> None:
    w, u_g, u_a, m = shapes
    with pytest.raises(ValueError, match=match):
        project(torch.zeros(w), torch.zeros(u_g), torch.zeros(u_a), torch.zeros(m, dtype=torch.bool))


def test_eigendecompose_descending_clamped_and_reconstructs_the_mean() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    s = x @ x.T  # rank 3: three (numerically tiny, possibly negative) zero eigenvalues
    e = eigendecompose(s, count=4, dtype=torch.float64)
    assert bool((e.values[:-1] >= e.values[1:]).all()) and bool((e.values >= 0).all())
    torch.testing.assert_close(e.vectors @ torch.diag(e.values) @ e.vectors.T, s / 4)
    with pytest.raises(ValueError, match="positive token count"):
        eigendecompose(s, 0)
    with pytest.raises(ValueError, match="square"):
        eigendecompose(torch.zeros(3, 4), 1)


def _tiny_edit_setup():
    model = build_model("llama", vocab_size=40, layers=2, seed=5)
    targets = resolve_targets(model, layers=[1], projections=["gate", "up"])
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 40, (4, 12), generator=gen)} for _ in range(2)]
    return model, targets, collect_factors(model, batches, targets)


def test_edit_invariant_to_rescaling_A_or_G() -> None:
    model, targets, factors = _tiny_edit_setup()
    scaled = {name: KFACFactors(f.A_sum * 1000.0, f.G_sum * 1e-3, f.count * 7) for name, f in factors.items()}
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    r1 = apply_edit(m1, targets, eigenbases(factors, dtype=torch.float64), 0.7)
    r2 = apply_edit(m2, targets, eigenbases(scaled, dtype=torch.float64), 0.7)
    assert [r.kept_pairs for r in r1] == [r.kept_pairs for r in r2]
    for t in targets:
        torch.testing.assert_close(t.module(m1).weight, t.module(m2).weight, rtol=1e-5, atol=1e-6)


def test_rho_one_leaves_weights_unchanged_and_biases_untouched() -> None:
    model, targets, factors = _tiny_edit_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reports = apply_edit(model, targets, eigenbases(factors), 1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(r.kept_pairs == r.total_pairs and r.relative_change == 0.0 for r in reports)


def test_apply_edit_matches_manual_projection_and_reports() -> None:
    model, targets, factors = _tiny_edit_setup()
    eig = eigenbases(factors)
    w_before = {t.name: t.module(model).weight.detach().clone() for t in targets}
    rho = {"gate": 0.5, "up": 0.8}
    reports = apply_edit(model, targets, eig, lambda t: rho[t.role])
    for t, r in zip(targets, reports, strict=True):
        g, a = eig[t.name]
        mask = curvature_mask(g.values, a.values, rho[t.role])
        want = project(w_before[t.name], g.vectors, a.vectors, mask)
        torch.testing.assert_close(t.module(model).weight, want)
        d = r.to_dict()
        assert d["name"] == t.name and d["role"] == t.role and d["shape"] == [t.out_features, t.in_features]
        assert d["keep_mass"] == rho[t.role] and d["kept_pairs"] == int(mask.sum())
        assert d["kept_mass_fraction"] >= rho[t.role] and 0 < d["relative_change"] < 1
        assert d["rank_out"] == int(mask.any(1).sum()) and d["rank_in"] == int(mask.any(0).sum())


def test_apply_edit_requires_eigenbases_for_every_target() -> None:
    model, targets, factors = _tiny_edit_setup()
    eig = eigenbases(factors)
    eig.pop(targets[0].name)
    with pytest.raises(ValueError, match="no eigenbases"):
        apply_edit(model, targets, eig, 0.5)


def test_eigenbases_decompose_shared_A_once() -> None:
    _, targets, factors = _tiny_edit_setup()
    eig = eigenbases(factors)
    assert eig[targets[0].name][1] is eig[targets[1].name][1]
    assert isinstance(eig[targets[0].name][0], Eigen)


def test_sweep_with_reused_rotations_equals_per_rho_recomputation(monkeypatch: pytest.MonkeyPatch) -> None:
    # A sweep computes C = U_G^T W U_A once per target; every point must be bit-for-bit the
    # weight a fresh edit of the original weights at that rho gives (and report the same).
    from workers.curvature import edit as edit_module
    from workers.curvature.edit import Rotations

    model, targets, factors = _tiny_edit_setup()
    eig = eigenbases(factors)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    rotations = Rotations()
    calls: list[str] = []
    real_rotate = edit_module.rotate

    def counting_rotate(w: torch.Tensor, u_g: torch.Tensor, u_a: torch.Tensor) -> torch.Tensor:
        calls.append(str(tuple(w.shape)))
        return real_rotate(w, u_g, u_a)

    monkeypatch.setattr(edit_module, "rotate", counting_rotate)
    for rho in (0.3, 0.7, 0.95, 1.0, 0.5):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(originals[n])
        fresh = copy.deepcopy(model)
        want_reports = apply_edit(fresh, targets, eig, rho)
        got_reports = apply_edit(model, targets, eig, rho, rotations)
        assert got_reports == want_reports
        for n, p in model.named_parameters():
            assert torch.equal(p, dict(fresh.named_parameters())[n]), (rho, n)
        if rho < 1.0:  # the point really edits
            assert any(not torch.equal(originals[f"{t.name}.weight"], t.module(model).weight) for t in targets)
    # fresh edits rotate once per target and point (4 editing points); the sweep once per target
    assert len(rotations) == len(targets)
    assert len(calls) == 4 * len(targets) + len(targets)
