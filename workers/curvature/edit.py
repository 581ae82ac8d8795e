"""Apply a curvature edit in place: project each target's weight onto its kept eigen-pairs.

For each target the G- and A-eigenbases give a mask (``selection.curvature_mask`` at that
target's ``keep_mass``) and the weight is replaced by its projection (``projection.project``),
transposing GPT-2 ``Conv1D`` weights (stored (in, out)). Biases are untouched. Returns one
``LayerReport`` per target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from workers.curvature.eigen import Eigen
from workers.curvature.projection import project
from workers.curvature.selection import curvature_mask, selection_stats
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


def edit_target(model: nn.Module, target: EditTarget, g_eig: Eigen, a_eig: Eigen, keep_mass: float) -> LayerReport:
    """Edit one target in place and report it."""
    module = target.module(model)
    w = weight_matrix(target, module)
    if g_eig.values.numel() != target.out_features or a_eig.values.numel() != target.in_features:
        raise ValueError(
            f"expected eigenbases of sizes ({target.out_features}, {target.in_features}) for {target.name}, "
            f"got ({g_eig.values.numel()}, {a_eig.values.numel()})"
        )
    dev = w.device
    mask = curvature_mask(g_eig.values.to(dev), a_eig.values.to(dev), keep_mass)
    stats = selection_stats(mask, g_eig.values, a_eig.values)
    with torch.no_grad():
        new = project(w, g_eig.vectors, a_eig.vectors, mask)
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
) -> list[LayerReport]:
    """Edit every target in place; ``eigens[name] = (G-eigen, A-eigen)``; ``keep_mass`` per target."""
    missing = [t.name for t in targets if t.name not in eigens]
    if missing:
        raise ValueError(f"no eigenbases for targets {missing}; have {sorted(eigens)}")
    reports = []
    for t in targets:
        rho = keep_mass(t) if callable(keep_mass) else keep_mass
        g_eig, a_eig = eigens[t.name]
        reports.append(edit_target(model, t, g_eig, a_eig, rho))
    return reports
