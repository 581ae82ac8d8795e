"""K-FAC factors and the EK-FAC correction against an independent library, curvlinops
(``KFACLinearOperator`` / ``EKFACLinearOperator``), on a tiny Llama.

Conventions matched: curvlinops' empirical Fisher with ``CrossEntropyLoss(reduction="sum")`` and
``kfac_approx="expand"`` gives ``G = Σ_positions g gᵀ`` (our ``G_sum``) and
``A = Σ_positions a aᵀ / positions`` (our ``A_mean``); its operator on one weight ``W`` (out x in,
row-major flattening) is ``G ⊗ A``. Our valid positions exclude each row's last token (no next
token), so curvlinops sees the rows without their last token and the next tokens as labels —
the same activations, because the models are causal. curvlinops' EK-FAC squares per-*example*
(per-sequence) rotated gradients while ours is per position, so that comparison uses sequences
with exactly one valid position (two tokens), where the two coincide; the EK-FAC operator
``(U_G ⊗ U_A) diag(vec s) (U_G ⊗ U_A)ᵀ`` is compared densely (invariant to eigenvector signs
and to the basis chosen inside the factors' null spaces, where ``s`` is zero)."""

from __future__ import annotations

import torch
from curvlinops import EKFACLinearOperator, KFACLinearOperator
from torch import nn

from tests.tiny_models import build_model
from workers.curvature import collect_factors, eigenbases, resolve_targets
from workers.curvature.ekfac import collect_corrections

V = 48


class LogitsOnly(nn.Module):
    """``x -> logits`` as (batch, vocabulary, positions), the layout CrossEntropyLoss expects, or
    (batch, vocabulary) for one-token inputs (curvlinops' EK-FAC takes 2-D outputs only)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm(input_ids=x, use_cache=False).logits
        return logits[:, 0] if x.shape[1] == 1 else logits.transpose(1, 2)


def _dense(op: object, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(op @ torch.eye(n, dtype=dtype))  # type: ignore[operator]


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


def _setup(rows: int, length: int):
    model = build_model("llama", vocab_size=V, seed=3, layers=2).double()
    targets = resolve_targets(model, layers=[1], projections=["up", "down"])
    ids = torch.randint(2, V, (rows, length), generator=torch.Generator().manual_seed(0))
    ours = [{"input_ids": ids[i : i + 3]} for i in range(0, rows, 3)]
    labels = ids[:, 1] if length == 2 else ids[:, 1:]
    theirs = [(ids[i : i + 3, :-1], labels[i : i + 3]) for i in range(0, rows, 3)]
    return model, targets, ours, theirs


def test_kfac_factors_match_curvlinops() -> None:
    model, targets, ours, theirs = _setup(rows=6, length=9)
    factors = collect_factors(model, ours, targets, fisher="empirical")
    for t in targets:
        w = t.module(model).weight
        op = KFACLinearOperator(
            LogitsOnly(model),
            nn.CrossEntropyLoss(reduction="sum"),
            [w],
            theirs,
            fisher_type="empirical",
            kfac_approx="expand",
        )
        f = factors[t.name]
        want = torch.kron(f.G_sum.double(), f.A_mean().double())
        assert _rel(_dense(op, w.numel(), w.dtype), want) < 1e-5, t.name


def test_ekfac_correction_matches_curvlinops_on_one_position_per_sequence() -> None:
    model, targets, ours, theirs = _setup(rows=12, length=2)
    eigens = eigenbases(collect_factors(model, ours, targets, fisher="empirical"), dtype=torch.float64)
    corr = collect_corrections(model, ours, targets, eigens, fisher="empirical")
    for t in targets:
        w = t.module(model).weight
        op = EKFACLinearOperator(
            LogitsOnly(model),
            nn.CrossEntropyLoss(reduction="sum"),
            [w],
            theirs,
            fisher_type="empirical",
            kfac_approx="expand",
        )
        g_eig, a_eig = eigens[t.name]
        basis = torch.kron(g_eig.vectors, a_eig.vectors)
        want = basis @ torch.diag(corr[t.name].S_sum.double().reshape(-1)) @ basis.T
        assert _rel(_dense(op, w.numel(), w.dtype), want) < 1e-5, t.name
