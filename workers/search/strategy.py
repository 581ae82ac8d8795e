"""The goal-directed search: which layer set and which rho give the least-damaging edit that still
meets the forget target. Pure Python around an ``Evaluator`` callback (no torch, no Redis), so it
runs against a synthetic oracle in tests and against real edits in the pipeline.

Monotonicity it relies on (observed on every sweep in ``examples/README.md``): for one layer set,
raising rho (keeping more curvature mass) edits less, so recitation rises and retain damage falls.
Hence for a layer set the best feasible point is the *largest* rho that still meets the forget
target, provided retain holds there; the forget boundary is found by bisection in ``t`` (see
``workers.search.candidates.RhoScale``).

Per layer set (all sets advance round-robin, one probe each per round, so an incumbent appears early):

1. probe the low end of the range (the strongest edit): forget not met there -> the set can never
   meet it; drop the set;
2. bisect between the largest rho known to meet forget (``lo``) and the smallest known not to (``hi``;
   the high end is probed last, only when everything below it met forget) until ``hi - lo <= tol``
   — or, while no feasible point of the set is known and ``lo`` fails retain, down to ``fine_tol``
   (the feasible window may be narrower than ``tol``; the demo model's layer-0 window is);
3. a probe that misses forget and fails retain ends the set (lower rho: more damage; higher rho:
   more recitation); one that misses forget with damage no smaller than the best feasible trial so
   far ends it too (every rho that could meet forget lies below and damages at least as much).

With screening, the probes run on subsampled forget/retain sets; then feasible screen trials are
confirmed on the full sets in order of damage (ties: fewer layers, then larger rho) until one
passes or the budget is spent (a candidate that full-set trials of its layer set already rule out
by monotonicity is skipped). When every confirmation fails (the subsets were optimistic), the
failed layer sets are bisected on the full sets, in confirmation order, inside the interval the
full-set trials leave open: a miss of forget means rho must go down, a miss of retain that it must
go up; the first full-set feasible point found is chosen. Then up to ``REFINE_STEPS`` more
bisection steps on the full sets push the chosen rho of that layer set up (less damage) while it
stays feasible. ``max_trials`` bounds every evaluation, screen and confirm alike.
Choice: the confirmed feasible trial with the least retain damage (``perplexity_increase``), ties
-> fewer edited layers. When none is feasible, ``chosen`` is the trial closest to the targets
(least summed relative shortfall) and ``met`` is False.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from contract.search import SearchResult, Trial, TrialMetrics, TrialStage
from workers.search.candidates import RhoScale

DEFAULT_TOL = 1.0 / 16.0
FINE_TOL = 1.0 / 256.0
REFINE_STEPS = 3
Evaluator = Callable[[tuple[int, ...], float, bool], TrialMetrics]
"""``evaluate(layers, keep_mass, full)`` -> metrics; ``full`` False means the screening subsets."""


@dataclass(frozen=True)
class Targets:
    """The objective's thresholds (None: not constrained)."""

    max_strict_rate: float | None
    max_loose_rate: float | None
    max_perplexity_increase: float
    min_ndcg: float | None = None

    def forget_met(self, m: TrialMetrics) -> bool:
        if self.max_strict_rate is not None and m.strict_rate > self.max_strict_rate:
            return False
        return self.max_loose_rate is None or m.loose_rate <= self.max_loose_rate

    def retain_met(self, m: TrialMetrics) -> bool:
        if not m.perplexity_increase <= self.max_perplexity_increase:  # NaN fails too
            return False
        return self.min_ndcg is None or (m.ndcg is not None and m.ndcg >= self.min_ndcg)

    def shortfall(self, m: TrialMetrics) -> float:
        """Summed relative excess over the targets (0 when all are met)."""

        def excess(value: float, limit: float) -> float:
            return max(0.0, value - limit) / max(limit, 0.01)

        total = 0.0
        if self.max_strict_rate is not None:
            total += excess(m.strict_rate, self.max_strict_rate)
        if self.max_loose_rate is not None:
            total += excess(m.loose_rate, self.max_loose_rate)
        inc = m.perplexity_increase if math.isfinite(m.perplexity_increase) else 1e9
        total += excess(inc, self.max_perplexity_increase)
        if self.min_ndcg is not None:
            total += max(0.0, self.min_ndcg - (m.ndcg or 0.0)) / max(self.min_ndcg, 0.01)
        return total


def damage(trial: Trial) -> float:
    inc = trial.metrics.perplexity_increase
    return inc if math.isfinite(inc) else math.inf


def preference(trial: Trial) -> tuple[float, int, float]:
    """Sort key among feasible trials: least damage, then fewer layers, then larger rho."""
    return (damage(trial), len(trial.layers), -trial.keep_mass)


@dataclass
class _SetState:
    layers: tuple[int, ...]
    lo: float | None = None  # largest t known to meet forget
    hi: float | None = None  # smallest t known to miss forget
    feasible: bool = False  # some probe of this set met both targets
    done: bool = False

    def next_t(self, tol: float, fine_tol: float) -> float | None:
        if self.done:
            return None
        if self.lo is None:
            return 0.0
        upper = 1.0 if self.hi is None else self.hi
        if upper - self.lo <= tol:
            if self.hi is None and self.lo < 1.0:
                return 1.0  # everything probed met forget: try the weakest edit itself
            # lo meets forget but not retain, hi the reverse: a feasible window narrower than tol
            # may lie between them; keep bisecting it down to fine_tol
            if self.feasible or self.hi is None or upper - self.lo <= fine_tol:
                return None
        return (self.lo + upper) / 2.0


class SearchRun:
    """One search; ``run()`` returns the ``SearchResult``."""

    def __init__(
        self,
        layer_sets: Sequence[Sequence[int]],
        scale: RhoScale,
        targets: Targets,
        evaluate: Evaluator,
        *,
        max_trials: int,
        projections: Sequence[str],
        screen: bool,
        tol: float = DEFAULT_TOL,
        fine_tol: float = FINE_TOL,
        refine_steps: int = REFINE_STEPS,
        on_trial: Callable[[Trial, int], None] | None = None,
    ) -> None:
        if max_trials < 1:
            raise ValueError(f"expected max_trials >= 1, got {max_trials}")
        if not layer_sets:
            raise ValueError("expected at least one candidate layer set")
        self.layer_sets = [tuple(s) for s in layer_sets]
        self.scale = scale
        self.targets = targets
        self.evaluate = evaluate
        self.max_trials = max_trials
        self.projections = list(projections)
        self.screen = screen
        self.tol = tol
        self.fine_tol = fine_tol
        self.refine_steps = refine_steps
        self.on_trial = on_trial
        self.trials: list[Trial] = []
        self._seen: dict[tuple[tuple[int, ...], float, TrialStage], Trial] = {}

    def _budget_left(self) -> int:
        return self.max_trials - len(self.trials)

    def _run(self, layers: tuple[int, ...], rho: float, stage: TrialStage) -> Trial:
        key = (layers, rho, stage)
        if key in self._seen:
            return self._seen[key]
        metrics = self.evaluate(layers, rho, stage == "confirm")
        forget = self.targets.forget_met(metrics)
        retain = self.targets.retain_met(metrics)
        trial = Trial(
            index=len(self.trials) + 1,
            layers=list(layers),
            projections=self.projections,
            keep_mass=rho,
            stage=stage,
            metrics=metrics,
            forget_met=forget,
            retain_met=retain,
            feasible=forget and retain,
        )
        self.trials.append(trial)
        self._seen[key] = trial
        if self.on_trial is not None:
            self.on_trial(trial, self.max_trials)
        return trial

    def _probe_phase(self, stage: TrialStage, budget: int) -> None:
        states = [_SetState(s) for s in self.layer_sets]
        best = math.inf  # least damage of a feasible probe so far
        used = 0
        while used < budget:
            progressed = False
            for st in states:
                t = st.next_t(self.tol, self.fine_tol)
                if t is None:
                    st.done = True
                    continue
                if used >= budget:
                    break
                before = len(self.trials)
                trial = self._run(st.layers, self.scale.rho(t), stage)
                used += len(self.trials) - before
                progressed = True
                if trial.forget_met:
                    st.lo = t
                    if trial.retain_met:
                        st.feasible = True
                        best = min(best, damage(trial))
                    if t >= 1.0:
                        st.done = True
                else:
                    st.hi = t
                    if t <= 0.0 or not trial.retain_met or damage(trial) >= best:
                        st.done = True
            if not progressed:
                break

    def _full_bounds(self, layers: tuple[int, ...]) -> tuple[float, float]:
        """The open interval of ``t`` where ``layers`` can still be feasible on the full sets: above the
        largest full-set ``t`` that failed retain (damage falls as rho rises), below the smallest that
        missed forget (recitation rises with rho); -inf / inf where none is known."""
        full = [t for t in self.trials if t.stage == "confirm" and tuple(t.layers) == layers]
        lower = max((self.scale.t(t.keep_mass) for t in full if not t.retain_met), default=-math.inf)
        upper = min((self.scale.t(t.keep_mass) for t in full if not t.forget_met), default=math.inf)
        return lower, upper

    def _bisect_full(self, layer_sets: Sequence[tuple[int, ...]]) -> Trial | None:
        """Every confirmation failed: bisect each of those layer sets (in confirmation order) on the
        full sets inside its feasible interval (``_full_bounds``, clipped to [0, 1]) until a full-set
        feasible point appears, the interval is narrower than ``fine_tol`` or the budget is spent. A
        probe missing forget moves the upper end down (a stronger edit is needed), one failing retain
        moves the lower end up; one missing both empties the interval. Returns the first feasible trial."""
        for layers in layer_sets:
            while self._budget_left() > 0:
                lower, upper = self._full_bounds(layers)
                lo, hi = max(lower, 0.0), min(upper, 1.0)
                if hi - lo <= self.fine_tol:
                    break
                trial = self._run(layers, self.scale.rho((lo + hi) / 2.0), "confirm")
                if trial.feasible:
                    return trial
        return None

    def _refine(self, chosen: Trial) -> Trial:
        """Up to ``refine_steps`` more bisection steps on the full sets between the chosen rho and the
        smallest rho of its layer set known to miss forget: the chosen point moves up (less damage)
        while it stays feasible."""
        layers = tuple(chosen.layers)
        lo = self.scale.t(chosen.keep_mass)
        misses = [self.scale.t(t.keep_mass) for t in self.trials if tuple(t.layers) == layers and not t.forget_met]
        hi = min((m for m in misses if m > lo), default=1.0)
        for _ in range(self.refine_steps):
            if self._budget_left() <= 0 or hi - lo <= self.fine_tol:
                break
            mid = (lo + hi) / 2.0
            trial = self._run(layers, self.scale.rho(mid), "confirm")
            if trial.feasible:
                chosen = min(chosen, trial, key=preference)
                lo = mid
            elif trial.forget_met:  # retain fails above a feasible rho: not monotone here, stop
                break
            else:
                hi = mid
        return chosen

    def run(self) -> SearchResult:
        stage: TrialStage = "screen" if self.screen else "confirm"
        reserve = min(3, max(1, self.max_trials // 8)) if self.screen else 0
        self._probe_phase(stage, self.max_trials - reserve)
        chosen: Trial | None = None
        if self.screen:
            candidates = sorted((t for t in self.trials if t.feasible), key=preference)
            failed: list[tuple[int, ...]] = []  # layer sets whose confirmation failed, in order
            for cand in candidates:
                if self._budget_left() <= 0:
                    break
                layers = tuple(cand.layers)
                lower, upper = self._full_bounds(layers)
                t = self.scale.t(cand.keep_mass)
                if t <= lower or t >= upper:  # the full sets already rule this rho out
                    continue
                confirmed = self._run(layers, cand.keep_mass, "confirm")
                if confirmed.feasible:
                    chosen = confirmed
                    break
                if layers not in failed:
                    failed.append(layers)
            if chosen is None:
                chosen = self._bisect_full(failed)
        else:
            feasible = [t for t in self.trials if t.feasible]
            chosen = min(feasible, key=preference) if feasible else None
        if chosen is not None:
            chosen = self._refine(chosen)
        met = chosen is not None
        if chosen is None and self.trials:
            pool = [t for t in self.trials if t.stage == "confirm"] or self.trials
            chosen = min(pool, key=lambda t: (self.targets.shortfall(t.metrics), *preference(t)))
        return SearchResult(
            trials=self.trials,
            chosen=chosen,
            met=met,
            layer_sets=[list(s) for s in self.layer_sets],
            max_trials=self.max_trials,
            evaluations=len(self.trials),
        )


def run_search(
    layer_sets: Sequence[Sequence[int]],
    scale: RhoScale,
    targets: Targets,
    evaluate: Evaluator,
    *,
    max_trials: int,
    projections: Sequence[str] = ("gate", "up"),
    screen: bool = False,
    tol: float = DEFAULT_TOL,
    on_trial: Callable[[Trial, int], None] | None = None,
) -> SearchResult:
    """Search ``layer_sets`` x ``scale`` for the least-damaging feasible edit (module docstring)."""
    return SearchRun(
        layer_sets,
        scale,
        targets,
        evaluate,
        max_trials=max_trials,
        projections=projections,
        screen=screen,
        tol=tol,
        on_trial=on_trial,
    ).run()
