"""Goal-directed search vs the exhaustive 81-point grid on the demo model, same factors.

Loads ``examples/demo`` and the objective of ``examples/demo-edit.json`` (strict recitation <= 5 %,
held-out perplexity <= +10 %), collects K-FAC factors and eigenbases once for all four layers, then

1. runs the goal-directed search (``workers.search``, screening + confirmation, as the pipeline does)
   over the README sweep's nine layer sets, and
2. evaluates the README's exhaustive grid — the same nine layer sets x nine rho
   (0.6 ... 0.99) — on the full forget / retain sets,

with the same evaluator (``workers.pipeline.search_stage.ObjectiveEvaluator``: re-project, greedy
recitation, packed perplexity). Prints trials and wall time of each, their ratio, and the chosen
point of each (least perplexity increase among feasible points).

Rerun: ``.venv/bin/python bench/bench_search.py [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from contract.search import Trial
from contract.spec import EditJobSpec
from workers.curvature import collect_factors, eigenbases, iter_batches, pack_texts, resolve_targets
from workers.pipeline.search_stage import ObjectiveEvaluator
from workers.search import RhoScale, Targets, preference, run_search

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
GRID_SETS = [[0], [1], [2], [3], [0, 1], [1, 2], [2, 3], [1, 2, 3], [0, 1, 2, 3]]
GRID_RHOS = [0.6, 0.8, 0.875, 0.9, 0.95, 0.975, 0.98, 0.985, 0.99]


def blocks(path: Path) -> list[str]:
    return [b.strip() for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]


def describe(t: Trial | None) -> str:
    if t is None:
        return "none"
    m = t.metrics
    return (
        f"layers {','.join(map(str, t.layers))} ρ={t.keep_mass:.5g}: strict {m.strict_rate:.3f}, "
        f"ppl {m.perplexity_increase * 100:+.2f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = EditJobSpec.model_validate_json((EXAMPLES / "demo-edit.json").read_text())
    assert spec.objective is not None
    objective = spec.objective
    model_dir = EXAMPLES / (spec.model.path or "demo")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(x) for x in (EXAMPLES / str(objective.forget.path)).read_text().splitlines() if x.strip()]
    pairs = [(r["prefix"], r["suffix"]) for r in rows]
    retain = blocks(EXAMPLES / str(objective.retain.perplexity.path))
    calibration = blocks(EXAMPLES / str(spec.calibration.path))

    t0 = time.perf_counter()
    targets = resolve_targets(model, layers=[0, 1, 2, 3], projections=list(objective.search.projections))
    ids = pack_texts(tok, calibration, spec.calibration.seq_len, spec.calibration.max_tokens)
    factors = collect_factors(
        model, iter_batches(ids, spec.calibration.batch_size), targets, fisher="sampled", seed=spec.curvature.seed
    )
    eig = eigenbases(factors)
    t_factors = time.perf_counter() - t0

    evaluator = ObjectiveEvaluator(model, tok, targets, eig, objective, pairs, retain, should_cancel=lambda: False)
    goal = Targets(
        max_strict_rate=objective.forget.max_strict_rate,
        max_loose_rate=objective.forget.max_loose_rate,
        max_perplexity_increase=objective.retain.max_perplexity_increase,
        min_ndcg=objective.retain.min_agreement_ndcg,
    )

    t0 = time.perf_counter()
    found = run_search(
        GRID_SETS,
        RhoScale(*objective.search.keep_mass_range),
        goal,
        evaluator,
        max_trials=objective.search.max_trials,
        projections=list(objective.search.projections),
        screen=evaluator.screens,
    )
    t_search = time.perf_counter() - t0
    screened = sum(1 for t in found.trials if t.stage == "screen")

    t0 = time.perf_counter()
    grid: list[Trial] = []
    for layers in GRID_SETS:
        for rho in GRID_RHOS:
            m = evaluator(tuple(layers), rho, True)
            forget, keep = goal.forget_met(m), goal.retain_met(m)
            grid.append(
                Trial(
                    index=len(grid) + 1,
                    layers=layers,
                    projections=list(objective.search.projections),
                    keep_mass=rho,
                    stage="confirm",
                    metrics=m,
                    forget_met=forget,
                    retain_met=keep,
                    feasible=forget and keep,
                )
            )
    t_grid = time.perf_counter() - t0
    feasible = [t for t in grid if t.feasible]
    grid_best = min(feasible, key=preference) if feasible else None

    print(f"demo model, objective: strict <= {goal.max_strict_rate}, perplexity <= +{goal.max_perplexity_increase:.0%}")
    print(f"factors + eigenbases (shared, once): {t_factors:.1f} s for {len(targets)} targets")
    print("| method | evaluations | wall time (s) | chosen | met |")
    print("|---|---:|---:|---|---|")
    print(
        f"| goal-directed search | {found.evaluations} ({screened} screening, {found.evaluations - screened} full) | "
        f"{t_search:.1f} | {describe(found.chosen)} | {found.met} |"
    )
    print(f"| exhaustive grid 9 x 9 | {len(grid)} | {t_grid:.1f} | {describe(grid_best)} | {grid_best is not None} |")
    print(
        f"ratio grid/search: {len(grid) / found.evaluations:.2f}x evaluations, {t_grid / t_search:.2f}x wall time "
        f"(grid feasible points: {len(feasible)})"
    )
    print("rerun: .venv/bin/python bench/bench_search.py [--threads N]")


if __name__ == "__main__":
    main()
