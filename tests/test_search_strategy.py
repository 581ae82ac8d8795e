"""The goal-directed search strategy against a brute-force oracle on synthetic monotone metrics.

Each synthetic layer set has a forget boundary ``f`` (strict recitation 0 up to rho = f, rising
steeply above it) and a damage curve falling in rho. The oracle evaluates every set on a fine grid
of 4,001 points and takes the least-damage feasible point (ties: fewer layers); the strategy must
find a feasible point at least as good as every set's feasible window (wider than the fine
tolerance) read one bisection tolerance below its upper end, never better than the true optimum,
and within ``max_trials`` evaluations.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from contract.search import TrialMetrics
from workers.search import RhoScale, Targets, default_layer_sets, run_search
from workers.search.strategy import DEFAULT_TOL, FINE_TOL

TARGETS = Targets(max_strict_rate=0.05, max_loose_rate=None, max_perplexity_increase=0.10)
SCALE = RhoScale(0.5, 0.9999)
GRID = [i / 4000 for i in range(4001)]


@dataclass(frozen=True)
class Curve:
    """Synthetic monotone behaviour of one layer set."""

    forget_at: float  # strict rate 0 at rho <= forget_at, +20 per unit rho above
    damage_scale: float  # perplexity increase = scale * ((1 - rho) / 0.5) ** power
    power: float = 2.0

    def metrics(self, rho: float) -> TrialMetrics:
        strict = min(1.0, max(0.0, (rho - self.forget_at) * 20.0))
        inc = self.damage_scale * ((1.0 - rho) / 0.5) ** self.power
        return TrialMetrics(strict_rate=strict, loose_rate=strict, perplexity_increase=inc)


def feasible_window(curve: Curve, targets: Targets = TARGETS) -> tuple[float, float] | None:
    """Brute force: first and last grid t where the set meets both targets (contiguous when monotone)."""
    ok = [t for t in GRID if targets.forget_met(m := curve.metrics(SCALE.rho(t))) and targets.retain_met(m)]
    return (ok[0], ok[-1]) if ok else None


def oracle(curves: dict[tuple[int, ...], Curve], targets: Targets = TARGETS) -> tuple[tuple[int, ...], float] | None:
    """Brute force: least-damage feasible (set, t) on the grid; ties -> fewer layers."""
    best: tuple[float, int, tuple[int, ...], float] | None = None
    for layers, curve in curves.items():
        for t in GRID:
            m = curve.metrics(SCALE.rho(t))
            if targets.forget_met(m) and targets.retain_met(m):
                key = (m.perplexity_increase, len(layers), layers, t)
                if best is None or key[:2] < best[:2]:
                    best = key
    return None if best is None else (best[2], best[3])


def evaluator(curves: dict[tuple[int, ...], Curve], calls: list[tuple[tuple[int, ...], float, bool]]):
    def evaluate(layers: tuple[int, ...], rho: float, full: bool) -> TrialMetrics:
        calls.append((layers, rho, full))
        return curves[layers].metrics(rho)

    return evaluate


def random_curves(seed: int) -> dict[tuple[int, ...], Curve]:
    rng = random.Random(seed)
    out = {}
    for s in default_layer_sets(4):
        # some sets never forget inside the range, some damage too much, most have a window
        forget_at = rng.choice([0.3, rng.uniform(0.55, 0.999), rng.uniform(0.55, 0.999), rng.uniform(0.6, 0.99)])
        out[tuple(s)] = Curve(forget_at=forget_at, damage_scale=rng.uniform(0.05, 20.0), power=rng.uniform(1.0, 3.0))
    return out


@pytest.mark.parametrize("seed", range(16))
def test_search_matches_the_brute_force_oracle(seed: int) -> None:
    curves = random_curves(seed)
    calls: list = []
    result = run_search(list(curves), SCALE, TARGETS, evaluator(curves, calls), max_trials=48)
    best = oracle(curves)
    assert len(calls) == result.evaluations == len(result.trials) <= 48
    # every set whose feasible window is wider than the fine tolerance, read one bisection
    # tolerance below the window's upper end, bounds the damage the search may settle for
    bounds = []
    for curve in curves.values():
        window = feasible_window(curve)
        if window is not None and window[1] - window[0] > 2 * FINE_TOL:
            bounds.append(curve.metrics(SCALE.rho(max(window[0], window[1] - DEFAULT_TOL))).perplexity_increase)
    if best is None:
        assert not result.met
        return
    if not bounds:  # only windows too narrow to be promised: whatever is chosen must be true
        assert not result.met or feasible_truth(curves, result.chosen)
        return
    assert result.met and result.chosen is not None
    chosen = result.chosen
    assert feasible_truth(curves, chosen)
    assert chosen.metrics.perplexity_increase <= min(bounds) + 1e-12
    # never better than the true optimum (the grid is fine: allow one grid step of slack)
    best_layers, best_t = best
    step_damage = curves[best_layers].metrics(SCALE.rho(min(1.0, best_t + 1 / 4000))).perplexity_increase
    assert step_damage - 1e-12 <= chosen.metrics.perplexity_increase


def feasible_truth(curves: dict[tuple[int, ...], Curve], trial) -> bool:
    truth = curves[tuple(trial.layers)].metrics(trial.keep_mass)
    return TARGETS.forget_met(truth) and TARGETS.retain_met(truth)


def test_far_fewer_evaluations_than_an_exhaustive_grid() -> None:
    counts = []
    for seed in range(12):
        curves = random_curves(seed)
        counts.append(run_search(list(curves), SCALE, TARGETS, evaluator(curves, []), max_trials=48).evaluations)
    # 9 sets: a 9-point rho grid per set costs 81 and resolves rho far more coarsely than 1/16 in t
    assert max(counts) <= 40, counts


def test_nothing_feasible_reports_met_false_and_the_closest_trial() -> None:
    # forget is met only where damage exceeds the cap everywhere
    curves = {(0,): Curve(forget_at=0.7, damage_scale=50.0), (1,): Curve(forget_at=0.3, damage_scale=0.01)}
    calls: list = []
    result = run_search(list(curves), SCALE, TARGETS, evaluator(curves, calls), max_trials=20)
    assert oracle(curves) is None
    assert not result.met
    assert result.trials and result.chosen is not None
    assert not any(t.feasible for t in result.trials)
    shortfalls = [TARGETS.shortfall(t.metrics) for t in result.trials]
    assert TARGETS.shortfall(result.chosen.metrics) == min(shortfalls)
    # layer 1 never meets forget inside the range: one probe at the low end drops it
    assert sum(1 for layers, _, _ in calls if layers == (1,)) == 1


def test_impossible_perplexity_cap_is_not_met() -> None:
    curves = {tuple(s): Curve(forget_at=0.9, damage_scale=5.0) for s in default_layer_sets(3)}
    strict = Targets(max_strict_rate=0.05, max_loose_rate=None, max_perplexity_increase=1e-4)
    result = run_search(list(curves), SCALE, strict, evaluator(curves, []), max_trials=30)
    assert oracle(curves, strict) is None
    assert not result.met and 0 < result.evaluations <= 30


def test_ties_go_to_fewer_layers() -> None:
    same = Curve(forget_at=0.9, damage_scale=1.0)
    curves = {(0, 1, 2): same, (0, 1): same, (2,): same}
    result = run_search(list(curves), SCALE, TARGETS, evaluator(curves, []), max_trials=48)
    assert result.met and result.chosen is not None
    assert result.chosen.layers == [2]
    assert oracle(curves) is not None and oracle(curves)[0] == (2,)  # type: ignore[index]


@pytest.mark.parametrize("max_trials", [2, 5, 9, 13])
@pytest.mark.parametrize("screen", [False, True])
def test_max_trials_bounds_every_evaluation(max_trials: int, screen: bool) -> None:
    curves = random_curves(3)
    calls: list = []
    result = run_search(list(curves), SCALE, TARGETS, evaluator(curves, calls), max_trials=max_trials, screen=screen)
    assert len(calls) == len(result.trials) == result.evaluations <= max_trials
    assert [t.index for t in result.trials] == list(range(1, len(result.trials) + 1))


def test_screening_confirms_on_the_full_sets_and_falls_back_when_confirmation_fails() -> None:
    full = {(0,): Curve(forget_at=0.95, damage_scale=2.0), (1, 2): Curve(forget_at=0.9, damage_scale=20.0)}
    # the screening subsets are optimistic: they see forgetting up to a higher rho than the full set
    screened = {
        k: Curve(forget_at=min(0.9999, c.forget_at + 0.03), damage_scale=c.damage_scale) for k, c in full.items()
    }
    calls: list = []

    def evaluate(layers: tuple[int, ...], rho: float, is_full: bool) -> TrialMetrics:
        calls.append((layers, rho, is_full))
        return (full if is_full else screened)[layers].metrics(rho)

    result = run_search(list(full), SCALE, TARGETS, evaluate, max_trials=48, screen=True)
    confirms = [t for t in result.trials if t.stage == "confirm"]
    assert result.met and result.chosen is not None and result.chosen.stage == "confirm"
    truth = full[tuple(result.chosen.layers)].metrics(result.chosen.keep_mass)
    assert TARGETS.forget_met(truth) and TARGETS.retain_met(truth)
    assert confirms[0].feasible is False  # the screen's best point recites on the full set ...
    assert len(confirms) >= 2  # ... so the next candidate was confirmed
    assert all(is_full == (t.stage == "confirm") for t, (_, _, is_full) in zip(result.trials, calls, strict=True))


def test_rho_scale_is_monotone_and_hits_both_ends() -> None:
    values = [SCALE.rho(t) for t in GRID]
    assert values[0] == 0.5 and math.isclose(values[-1], 0.9999)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


Curves = dict[tuple[int, ...], Curve]
OPTIMISTIC_SUBSETS: dict[str, tuple[Curves, Curves]] = {
    # the subsets see forgetting up to a higher rho than the full set: every screen-feasible point
    # recites on the full set, whose feasible window lies below them (rho must go down)
    "forget": (
        {(0,): Curve(forget_at=0.9, damage_scale=1.0), (1, 2): Curve(forget_at=0.85, damage_scale=0.5)},
        {(0,): Curve(forget_at=0.99, damage_scale=1.0), (1, 2): Curve(forget_at=0.94, damage_scale=0.5)},
    ),
    # the subsets see less damage than the full set: the screen's points fail retain on the full set,
    # whose narrow feasible window lies just above them (rho must go up)
    "retain": (
        {(0,): Curve(forget_at=0.9, damage_scale=2.5), (1,): Curve(forget_at=0.3, damage_scale=0.1)},
        {(0,): Curve(forget_at=0.9, damage_scale=0.5), (1,): Curve(forget_at=0.3, damage_scale=0.1)},
    ),
}


@pytest.mark.parametrize("case", sorted(OPTIMISTIC_SUBSETS))
def test_failed_confirmations_continue_as_a_full_set_bisection(case: str) -> None:
    full, screened = OPTIMISTIC_SUBSETS[case]
    calls: list = []

    def evaluate(layers: tuple[int, ...], rho: float, is_full: bool) -> TrialMetrics:
        calls.append((layers, rho, is_full))
        return (full if is_full else screened)[layers].metrics(rho)

    result = run_search(list(full), SCALE, TARGETS, evaluate, max_trials=48, screen=True)
    assert len(calls) == result.evaluations == len(result.trials) <= 48
    assert all(is_full == (t.stage == "confirm") for t, (_, _, is_full) in zip(result.trials, calls, strict=True))
    # the scenario: no screen-feasible point is feasible on the full sets, so confirming screen
    # points alone cannot meet the objective (and some confirmation did fail) ...
    screen_feasible = [t for t in result.trials if t.stage == "screen" and t.feasible]
    assert screen_feasible and not any(feasible_truth(full, t) for t in screen_feasible)
    assert any(not t.feasible for t in result.trials if t.stage == "confirm")
    # ... yet a full-set feasible point exists, and the search finds it near the brute-force best
    best = oracle(full)
    assert best is not None
    assert result.met and result.chosen is not None and result.chosen.stage == "confirm"
    chosen = result.chosen
    assert chosen.feasible and feasible_truth(full, chosen)
    best_layers, best_t = best
    window = feasible_window(full[best_layers])
    assert window is not None
    bound = full[best_layers].metrics(SCALE.rho(max(window[0], window[1] - DEFAULT_TOL))).perplexity_increase
    assert chosen.metrics.perplexity_increase <= bound + 1e-12
    step_damage = full[best_layers].metrics(SCALE.rho(min(1.0, best_t + 1 / 4000))).perplexity_increase
    assert step_damage - 1e-12 <= chosen.metrics.perplexity_increase
