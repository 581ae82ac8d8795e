"""The plain data a report is drawn from, independent of how it was produced.

- ``ReportPoint``: one evaluated edit — a sweep point, or a trial of the goal-directed search —
  with ``layers``, ``projections``, ``keep_mass``, ``strict_rate``, ``loose_rate``,
  ``ppl_increase`` (relative: 0.05 = +5 %), ``feasible`` (None when there is no objective) and
  ``chosen``. ``ReportPoint.from_dict`` takes exactly those keys (plus an optional ``stage``).
- ``TargetBox``: the objective's caps (strict recitation rate, perplexity increase) drawn as a box.
- ``Spectrum``: the eigenvalues of A (layer inputs) and G (output gradients) of one edited target
  and the ``keep_mass`` it was edited with.
- ``Selection``: per-target selection reports (``LayerReport.to_dict()``) of one edit, for the
  kept-mass plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ReportPoint:
    layers: tuple[int, ...]
    projections: tuple[str, ...]
    keep_mass: float
    strict_rate: float | None
    loose_rate: float | None
    ppl_increase: float | None
    feasible: bool | None = None
    chosen: bool = False
    stage: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReportPoint:
        def opt(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else float(v)

        return cls(
            layers=tuple(int(x) for x in d["layers"]),
            projections=tuple(str(x) for x in d.get("projections") or ()),
            keep_mass=float(d["keep_mass"]),
            strict_rate=opt("strict_rate"),
            loose_rate=opt("loose_rate"),
            ppl_increase=opt("ppl_increase"),
            feasible=None if d.get("feasible") is None else bool(d["feasible"]),
            chosen=bool(d.get("chosen", False)),
            stage=d.get("stage"),
        )

    @property
    def layer_label(self) -> str:
        return ",".join(str(x) for x in self.layers) or "–"

    def has_frontier_coordinates(self) -> bool:
        return self.strict_rate is not None and self.ppl_increase is not None


@dataclass(frozen=True)
class TargetBox:
    """Feasible region of the frontier: strict rate <= ``max_strict_rate`` and perplexity increase
    <= ``max_ppl_increase`` (either may be None: unconstrained)."""

    max_strict_rate: float | None
    max_ppl_increase: float | None


@dataclass
class Spectrum:
    """Eigenvalues of one target's factors (any order; sorted descending on use)."""

    name: str
    layer: int | None
    role: str | None
    a_values: np.ndarray
    g_values: np.ndarray
    keep_mass: float

    @property
    def label(self) -> str:
        if self.layer is not None and self.role is not None:
            return f"L{self.layer}.{self.role}"
        return self.name


@dataclass
class Selection:
    """Per-target selection of one edit: ``layers`` holds ``LayerReport.to_dict()`` rows."""

    label: str
    keep_mass: float
    layers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReportInput:
    """Everything ``write_report`` draws. ``kind``: ``single`` (one edit), ``sweep`` (a keep_mass
    sweep, nothing chosen) or ``search`` (goal-directed trials, one chosen when the targets were met).
    ``comparison`` is the chosen edit's before/after rows (``workers.evaluation.compare``)."""

    job_id: str
    model_label: str
    kind: str
    points: Sequence[ReportPoint]
    spectra: Sequence[Spectrum]
    selections: Sequence[Selection]
    box: TargetBox | None = None
    comparison: Sequence[Mapping[str, Any]] | None = None
    sweep_comparisons: Sequence[tuple[float, Sequence[Mapping[str, Any]]]] = ()
    met: bool | None = None
    notes: Sequence[str] = ()
    image_classifier: bool = False  # accuracies, not recitation / perplexity: no frontier to draw

    @property
    def chosen(self) -> ReportPoint | None:
        return next((p for p in self.points if p.chosen), None)
