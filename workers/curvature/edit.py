"""Apply a curvature edit in place: project each target's weight onto its kept eigen-pairs.

For each target the G- and A-eigenbases give a mask (``selection.curvature_mask`` at that
target's ``keep_mass``) and the weight is replaced by its projection (``projection.project``),
transposing GPT-2 ``Conv1D`` weights (stored (in, out)). Biases are untouched. Returns one
``LayerReport`` per target.

A ρ sweep passes one ``Rotations`` to every ``apply_edit`` call: ``C = U_G^T W U_A`` is then
computed once per target (from the weights of the first call, which must be the originals) and
each ρ costs only its selection, the mask and one back-rotation. The statistics come from the
per-row keep counts (O(m + n)), not from the (m, n) mask.

EK-FAC (``scores`` per target, the mean ``s_ij`` of ``workers.curvature.ekfac``): the pairs are
ranked by ``s_ij`` instead of ``λ_i μ_j`` (``selection.score_mask``, same keep-mass rule over
``Σ s_ij``); the kept mass fraction in the report is then a fraction of ``Σ s_ij``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from workers.curvature.eigen import Eigen
from workers.curvature.projection import rotate, unrotate
from workers.curvature.selection import keep_counts, mask_from_counts, score_mask, score_stats, stats_from_counts
from workers.curvature.targets import EditTarget, module_weight

KeepMassArg = float | Callable[[EditTarget], float]


@dataclass(frozen=True)
class LayerReport:
    """What one target's edit did (JSON-serialisable via ``to_dict``)."""

    name: str
    layer: int | None
    role: str | None
    shape: tuple[int, int]
    keep_mass: float
    kept_pairs: int
    total_pairs: int
    kept_mass_fraction: float
    rank_out: int
    rank_in: int
    relative_change: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def weight_matrix(target: EditTarget, module: nn.Module) -> torch.Tensor:
    """The target's weight viewed as (out, in) (a transposed view for Conv1D)."""
    w = module_weight(module)
    w = w.T if target.kind == "conv1d" else w
    if tuple(w.shape) != target.shape:
        raise ValueError(f"expected weight of {target.name} of shape {target.shape}, got {tuple(w.shape)}")
    return w


class Rotations:
    """``C = U_G^T W U_A`` per target name, computed on first use and reused (see module docstring).

    Holds one float32 (out, in) matrix per target on the weight's device; create one per sweep
    over the same original weights and eigenbases, and drop it afterwards.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, torch.Tensor] = {}

    def get(self, target: EditTarget, weight: torch.Tensor, g_eig: Eigen, a_eig: Eigen) -> torch.Tensor:
        c = self._by_name.get(target.name)
        if c is None:
            c = self._by_name[target.name] = rotate(weight, g_eig.vectors, a_eig.vectors)
        return c

    def __len__(self) -> int:
        return len(self._by_name)


def edit_target(
    model: nn.Module,
    target: EditTarget,
    g_eig: Eigen,
    a_eig: Eigen,
    keep_mass: float,
    rotations: Rotations | None = None,
    scores: torch.Tensor | None = None,
) -> LayerReport:
    """Edit one target in place and report it (``rotations``: reuse ``C`` across a sweep;
    ``scores``: EK-FAC ``s`` of shape (out, in) to rank by instead of ``λ_i μ_j``)."""
    module = target.module(model)
    w = weight_matrix(target, module)
    if g_eig.values.numel() != target.out_features or a_eig.values.numel() != target.in_features:
        raise ValueError(
            f"expected eigenbases of sizes ({target.out_features}, {target.in_features}) for {target.name}, "
            f"got ({g_eig.values.numel()}, {a_eig.values.numel()})"
        )
    dev = w.device
    score_keep: torch.Tensor | None = None
    if scores is None:
        counts = keep_counts(g_eig.values, a_eig.values, keep_mass)
        stats = stats_from_counts(counts, g_eig.values, a_eig.values)
    else:
        if tuple(scores.shape) != target.shape:
            raise ValueError(f"expected scores of {target.name} of shape {target.shape}, got {tuple(scores.shape)}")
        score_keep = score_mask(scores, keep_mass)
        stats = score_stats(score_keep, scores)
    with torch.no_grad():
        if stats["kept_pairs"] == stats["total_pairs"]:
            change = 0.0  # every pair kept: the projection is the identity
        else:
            c = rotate(w, g_eig.vectors, a_eig.vectors) if rotations is None else rotations.get(target, w, g_eig, a_eig)
            mask = (mask_from_counts(counts, target.in_features) if score_keep is None else score_keep).to(dev)
            new = unrotate(c, g_eig.vectors, a_eig.vectors, mask, w.dtype)
            del mask
            w32 = w.detach().float()
            norm = float(w32.norm())
            change = float((new.float() - w32).norm()) / norm if norm > 0 else 0.0
            w.copy_(new)  # ``w`` is a view of the parameter (transposed for Conv1D)
    return LayerReport(
        name=target.name,
        layer=target.layer,
        role=target.role,
        shape=target.shape,
        keep_mass=float(keep_mass),
        kept_pairs=int(stats["kept_pairs"]),
        total_pairs=int(stats["total_pairs"]),
        kept_mass_fraction=float(stats["kept_mass_fraction"]),
        rank_out=int(stats["rank_out"]),
        rank_in=int(stats["rank_in"]),
        relative_change=change,
    )


def apply_edit(
    model: nn.Module,
    targets: Sequence[EditTarget],
    eigens: Mapping[str, tuple[Eigen, Eigen]],
    keep_mass: KeepMassArg,
    rotations: Rotations | None = None,
    corrections: Mapping[str, torch.Tensor] | None = None,
) -> list[LayerReport]:
    """Edit every target in place; ``eigens[name] = (G-eigen, A-eigen)``; ``keep_mass`` per target;
    ``rotations`` reuses each target's ``C`` across the calls of a sweep; ``corrections[name]``
    (EK-FAC ``s``, out x in) ranks that target's pairs by ``s_ij``."""
    missing = [t.name for t in targets if t.name not in eigens]
    if missing:
        raise ValueError(f"no eigenbases for targets {missing}; have {sorted(eigens)}")
    reports = []
    for t in targets:
        rho = keep_mass(t) if callable(keep_mass) else keep_mass
        g_eig, a_eig = eigens[t.name]
        scores = None if corrections is None else corrections[t.name]
        reports.append(edit_target(model, t, g_eig, a_eig, rho, rotations, scores))
    return reports
