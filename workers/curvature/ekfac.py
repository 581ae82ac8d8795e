"""EK-FAC eigenvalue correction: the true second moment of each K-FAC eigen-component.

K-FAC ranks component ``(i, j)`` of a target ``W`` (out x in) by ``λ_i μ_j`` (eigenvalues of
``G`` and ``A``), which assumes ``E[(g aᵀ)²]`` factorises. EK-FAC keeps the eigenbases
``U_G``, ``U_A`` and measures, in one more pass over the calibration stream,

    s_ij = E_t[(U_Gᵀ g_t a_tᵀ U_A)_ij²] = E_t[(U_Gᵀ g_t)_i² (U_Aᵀ a_t)_j²]

over the same valid token positions, labels and samples as the factors
(``workers.curvature.factors``: the pass reuses its hooked collector, so the loss convention,
the counter-keyed sampled labels, the chunked logits and the samples are identical; with
``S`` samples ``s_ij`` averages ``(1/S) Σ_s`` per position). The per-position rotated rows are
squared and contracted chunk by chunk (``POSITION_CHUNK`` positions at a time), so beyond one
batch's activations the memory is one float32 (out x in) accumulator per target -- the size of
``C = U_Gᵀ W U_A``. Accumulation is float32 whatever the factor ``precision``. Unlike the
factors' sums (units and segments, ``contract.summation``), ``S_sum`` is added batch by batch, so
it depends on the batch size in the last bits (the correction pass is never sharded).

``EigenCorrection`` holds the sum and the position count (mergeable like ``KFACFactors``);
``mean()`` is ``s``. Selection by ``s`` is ``workers.curvature.selection.score_mask``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from workers.curvature.eigen import Eigen
from workers.curvature.factors import Fisher, _collect, _Collector, _options
from workers.curvature.precision import Precision
from workers.curvature.targets import EditTarget, module_weight

POSITION_CHUNK = 4096  # rows contracted per matrix product


@dataclass
class EigenCorrection:
    """EK-FAC sums for one target: ``S_sum`` (out x in) = Σ_t (U_Gᵀ g_t)² (U_Aᵀ a_t)²ᵀ, ``count``."""

    S_sum: torch.Tensor
    count: int

    def __post_init__(self) -> None:
        if self.S_sum.dim() != 2:
            raise ValueError(f"expected S_sum of shape (out, in), got {tuple(self.S_sum.shape)}")
        if self.count < 0:
            raise ValueError(f"expected count >= 0, got {self.count}")

    def __add__(self, other: EigenCorrection) -> EigenCorrection:
        if self.S_sum.shape != other.S_sum.shape:
            raise ValueError(f"expected S_sum of shape {tuple(self.S_sum.shape)}, got {tuple(other.S_sum.shape)}")
        return EigenCorrection(self.S_sum + other.S_sum.to(self.S_sum.device), self.count + other.count)

    def mean(self) -> torch.Tensor:
        return self.S_sum / max(self.count, 1)


def _squared_rotation_outer(acc: torch.Tensor, g_rot: torch.Tensor, a_rot: torch.Tensor, alpha: float) -> None:
    """``acc += alpha (g_rot²)ᵀ (a_rot²)`` over row chunks."""
    for start in range(0, g_rot.shape[0], POSITION_CHUNK):
        rows = slice(start, start + POSITION_CHUNK)
        acc.addmm_(g_rot[rows].square().T, a_rot[rows].square(), alpha=alpha)


class _CorrectionCollector(_Collector):
    """The factor collector's hooks, accumulating ``s_ij`` sums instead of ``A`` and ``G``."""

    def __init__(self, model: nn.Module, targets: list[EditTarget], eigens: Mapping[str, tuple[Eigen, Eigen]]) -> None:
        super().__init__(model, targets, "fp32", allocate=False)
        self.u_g: dict[str, torch.Tensor] = {}
        self.u_a: dict[str, torch.Tensor] = {}
        self.S: dict[str, torch.Tensor] = {}
        self.input_key = {t.name: t.input_key for t in targets}
        for t in targets:
            if t.name not in eigens:
                raise ValueError(f"no eigenbases for target {t.name}; have {sorted(eigens)}")
            g_eig, a_eig = eigens[t.name]
            if g_eig.values.numel() != t.out_features or a_eig.values.numel() != t.in_features:
                raise ValueError(
                    f"expected eigenbases of sizes ({t.out_features}, {t.in_features}) for {t.name}, "
                    f"got ({g_eig.values.numel()}, {a_eig.values.numel()})"
                )
            dev = module_weight(t.module(model)).device
            self.u_g[t.name] = g_eig.vectors.to(device=dev, dtype=torch.float32)
            self.u_a.setdefault(t.input_key, a_eig.vectors.to(device=dev, dtype=torch.float32))
            self.S[t.name] = torch.zeros(t.out_features, t.in_features, dtype=torch.float32, device=dev)
        self.a_rot: dict[str, torch.Tensor] = {}
        self.count = 0

    def on_input(self, target: EditTarget, a: torch.Tensor) -> None:
        u = self.u_a[target.input_key]
        self.a_rot[target.input_key] = a.to(u.device) @ u  # (N, in), kept until the batch's backward

    def on_output_grad(self, name: str, g: torch.Tensor, alpha: float) -> None:
        u = self.u_g[name]
        a_rot = self.a_rot[self.input_key[name]]
        k = g.shape[0] // a_rot.shape[0]  # k batched samples, sample-major rows
        if k * a_rot.shape[0] != g.shape[0]:
            raise ValueError(f"expected {name} gradient rows a multiple of {a_rot.shape[0]}, got {g.shape[0]}")
        g_rot = g.to(u.device) @ u
        for s in range(k):
            part = g_rot[s * a_rot.shape[0] : (s + 1) * a_rot.shape[0]]
            _squared_rotation_outer(self.S[name], part, a_rot.to(part.device), alpha)

    def finish_batch(self) -> None:
        super().finish_batch()
        self.a_rot = {}

    def result(self, count: int) -> dict:  # type: ignore[type-arg]
        self.count = count
        return {}


def collect_corrections(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    targets: list[EditTarget],
    eigens: Mapping[str, tuple[Eigen, Eigen]],
    fisher: Fisher = "sampled",
    *,
    seed: int = 0,
    samples: int = 1,
    precision: Precision = "fp32",
    logits_chunk: int = 1024,
    first_sequence: int = 0,
    total_tokens: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, EigenCorrection]:
    """One pass over ``batches`` (the calibration stream the factors came from) giving the EK-FAC
    sums per target name; ``eigens[name] = (G-eigen, A-eigen)``. Arguments as ``collect_factors``
    (``precision`` only validates: the correction accumulates in float32)."""
    opts = _options(targets, fisher, seed, samples, precision, logits_chunk, first_sequence, None)
    collector = _CorrectionCollector(model, targets, eigens)
    with torch.inference_mode(False):
        _collect(model, batches, targets, opts, first_sequence, total_tokens, progress, should_cancel, collector)
    return {t.name: EigenCorrection(collector.S[t.name], collector.count) for t in targets}
