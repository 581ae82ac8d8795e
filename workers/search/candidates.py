"""Candidate layer sets for a goal-directed edit and the rho coordinate the search moves in.

Default layer sets (``objective.search.layer_sets`` null): every contiguous window of 1, 2 or 3
layers, shortest first — for a 4-layer model ``[0] [1] [2] [3] [0,1] [1,2] [2,3] [0,1,2] [1,2,3]``.
Contiguous windows because memorized content is carried by neighbouring MLPs and because edits of
the same total size are then comparable; at most 3 layers because the search's cost grows with the
number of sets and larger windows mostly add damage. Models deeper than ``MAX_DEFAULT_SETS`` windows
allow are thinned: windows start on a stride so at most that many sets are searched.

rho coordinate: the search bisects in ``x = -log(1 - rho)`` rather than in rho, because the useful
windows shrink as rho approaches 1 (0.6 -> 0.8 matters as much as 0.98 -> 0.99); ``t`` in [0, 1]
maps linearly onto ``x`` between the two ends of ``keep_mass_range``.
"""

from __future__ import annotations

import math

MAX_WINDOW = 3
MAX_DEFAULT_SETS = 24
RHO_CAP = 1.0 - 1e-6  # x is infinite at rho = 1; a range ending at 1 is searched up to this


def default_layer_sets(
    num_layers: int, max_window: int = MAX_WINDOW, max_sets: int = MAX_DEFAULT_SETS
) -> list[list[int]]:
    """Every contiguous window of 1..``max_window`` layers (shortest first), thinned to ``max_sets``."""
    if num_layers < 1:
        raise ValueError(f"expected a model with at least one layer, got {num_layers}")
    out: list[list[int]] = []
    widths = range(1, min(max_window, num_layers) + 1)
    per_width = max(1, max_sets // len(widths))
    for w in widths:
        starts = list(range(0, num_layers - w + 1))
        if len(starts) > per_width:
            stride = math.ceil(len(starts) / per_width)
            starts = starts[::stride]
        out.extend([list(range(s, s + w)) for s in starts])
    return out


def normalize_layer_sets(sets: list[list[int]], num_layers: int) -> list[list[int]]:
    """Negative indices counted from the end, each set sorted, duplicates dropped (first kept)."""
    seen: set[tuple[int, ...]] = set()
    out: list[list[int]] = []
    for s in sets:
        norm = tuple(sorted({x % num_layers for x in s}))
        if norm not in seen:
            seen.add(norm)
            out.append(list(norm))
    return out


class RhoScale:
    """Maps ``t`` in [0, 1] onto rho in ``[low, high]``, linear in ``-log(1 - rho)``."""

    def __init__(self, low: float, high: float) -> None:
        if not 0.0 < low < high <= 1.0:
            raise ValueError(f"expected 0 < low < high <= 1, got [{low}, {high}]")
        self.low = low
        self.high = min(high, RHO_CAP)
        self._x0 = -math.log1p(-low)
        self._x1 = -math.log1p(-self.high)

    def t(self, rho: float) -> float:
        """Inverse of ``rho`` (clamped to [0, 1])."""
        x = -math.log1p(-min(rho, self.high))
        return min(1.0, max(0.0, (x - self._x0) / (self._x1 - self._x0)))

    def rho(self, t: float) -> float:
        if t <= 0.0:
            return self.low
        if t >= 1.0:
            return self.high
        x = self._x0 + t * (self._x1 - self._x0)
        return -math.expm1(-x)
