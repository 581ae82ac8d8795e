"""Curvature engine: K-FAC factors, eigenbases, curvature-mass selection and projection.

A plain library (no Redis) implementing the method in the README: resolve edit targets, collect K-FAC sums over
a calibration stream, eigendecompose them, select eigen-pairs by curvature mass and project the
weights. Typical use::

    targets = resolve_targets(model, layers=[-3, -2, -1], projections=["gate", "up"])
    ids = pack_texts(tokenizer, texts, seq_len=256, max_tokens=100_000)
    factors = collect_factors(model, iter_batches(ids, 8), targets)
    reports = apply_edit(model, targets, eigenbases(factors), keep_mass=0.6)
"""

from workers.curvature.calibration import count_tokens, iter_batches, pack_texts, pack_texts_masked
from workers.curvature.edit import LayerReport, Rotations, apply_edit, edit_target
from workers.curvature.eigen import Eigen, eigenbases, eigendecompose
from workers.curvature.factors import KFACFactors, collect_factors, merge_factors
from workers.curvature.projection import project
from workers.curvature.selection import curvature_mask, keep_counts, selection_stats
from workers.curvature.targets import EditTarget, TargetError, resolve_targets

__all__ = [
    "EditTarget",
    "Eigen",
    "KFACFactors",
    "LayerReport",
    "Rotations",
    "TargetError",
    "apply_edit",
    "collect_factors",
    "count_tokens",
    "curvature_mask",
    "edit_target",
    "eigenbases",
    "eigendecompose",
    "iter_batches",
    "keep_counts",
    "merge_factors",
    "pack_texts",
    "pack_texts_masked",
    "project",
    "resolve_targets",
    "selection_stats",
]
