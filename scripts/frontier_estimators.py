"""K-FAC vs EK-FAC frontier on the demo model: strict recitation vs held-out perplexity increase.

Collects the K-FAC factors once (all candidate layers, one pass), their eigenbases, and the EK-FAC
eigenvalue corrections (one more pass over the same calibration rows); then, for every layer set
and ``keep_mass`` ρ, edits with each estimator (K-FAC ranks pair (i, j) by λ_i μ_j, EK-FAC by
s_ij, same keep-mass rule), measures strict recitation of the planted records and held-out
perplexity, and restores the weights. Prints a Markdown table and the summary the comparison in
``docs/estimators.md`` quotes, writes the rows as JSON and the frontier plot as PNG.

Usage: ``python scripts/frontier_estimators.py [--layer-sets '1,2,3;0,1,2,3'] [--rhos ...]
[--out bench-results/frontier.json] [--plot docs/img/estimators-frontier.png]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scripts.sweep_demo import parse_layer_sets, read_blocks, read_pairs
from workers.curvature import collect_factors, eigenbases, iter_batches, pack_texts, resolve_targets
from workers.curvature.edit import apply_edit
from workers.curvature.ekfac import collect_corrections
from workers.evaluation import evaluate_perplexity, evaluate_recitation


def summarise(rows: list[dict[str, Any]], max_strict: float, max_rise: float) -> dict[str, dict[str, Any]]:
    """Per estimator and layer set: the smallest perplexity rise with strict <= max_strict, and the
    lowest strict recitation with a rise <= max_rise."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['estimator']} layers {','.join(map(str, row['layers']))}"
        s = out.setdefault(key, {"best_rise_at_forget": None, "best_strict_at_budget": None})
        if row["strict"] <= max_strict and (
            s["best_rise_at_forget"] is None or row["ppl_rise"] < s["best_rise_at_forget"]["ppl_rise"]
        ):
            s["best_rise_at_forget"] = row
        if row["ppl_rise"] <= max_rise and (
            s["best_strict_at_budget"] is None or row["strict"] < s["best_strict_at_budget"]["strict"]
        ):
            s["best_strict_at_budget"] = row
    return out


def measured_edit(
    model: Any,
    chosen: list[Any],
    eig: dict[str, Any],
    scores: dict[str, torch.Tensor],
    original: dict[str, torch.Tensor],
    rho: float,
    estimator: str,
    measure: Callable[[], dict[str, float]],
) -> dict[str, float]:
    """Edit ``chosen`` at ``rho`` with ``estimator`` (EK-FAC: by ``scores``), measure, restore the weights."""
    apply_edit(model, chosen, eig, keep_mass=rho, corrections=scores if estimator == "ekfac" else None)
    m = measure()
    with torch.no_grad():
        for t in chosen:
            t.module(model).weight.copy_(original[t.name])
    return m


def frontier_axes() -> tuple[Any, Any]:
    """A figure and axes for a frontier plot (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def draw_estimator_curves(
    ax: Any, rows: list[dict[str, Any]], x: Callable[[dict[str, Any]], float], y: Callable[[dict[str, Any]], float]
) -> None:
    """One line per (layer set, estimator) through its points in ρ order: K-FAC circles, EK-FAC squares."""
    for layers in sorted({tuple(r["layers"]) for r in rows}):
        for est, marker in (("kfac", "o"), ("ekfac", "s")):
            pts = sorted(
                (r for r in rows if tuple(r["layers"]) == layers and r["estimator"] == est), key=lambda r: r["rho"]
            )
            label = f"{est.upper()} layers {','.join(map(str, layers))}"
            ax.plot([x(r) for r in pts], [y(r) for r in pts], marker=marker, label=label)


def save_frontier(fig: Any, ax: Any, path: Path) -> None:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def plot(rows: list[dict[str, Any]], base: dict[str, float], path: Path) -> None:
    fig, ax = frontier_axes()
    draw_estimator_curves(ax, rows, lambda r: 100 * r["ppl_rise"], lambda r: 100 * r["strict"])
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("held-out perplexity increase (%)")
    ax.set_ylabel("strict recitation (%)")
    ax.set_title(f"demo model: K-FAC vs EK-FAC frontier (baseline ppl {base['perplexity']:.3f})")
    ax.axhline(5, color="grey", lw=0.8, ls="--")
    ax.axvline(10, color="grey", lw=0.8, ls="--")
    save_frontier(fig, ax, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("examples/demo"))
    parser.add_argument("--layer-sets", default="1,2,3;0,1,2,3")
    parser.add_argument("--projections", default="gate,up")
    parser.add_argument("--rhos", default="0.6,0.8,0.875,0.9,0.95,0.975,0.985,0.99,0.995")
    parser.add_argument("--calib-tokens", type=int, default=20_000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ppl-tokens", type=int, default=10_000)
    parser.add_argument("--fisher", default="sampled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    pairs = read_pairs(args.model / "memorized.jsonl")
    heldout = read_blocks(args.model / "heldout.txt")
    calibration = read_blocks(args.model / "calibration.txt")
    layer_sets = parse_layer_sets(args.layer_sets)
    rhos = [float(r) for r in args.rhos.split(",")]

    def measure() -> dict[str, float]:
        rec = evaluate_recitation(model, tok, pairs, prefix_tokens=32, suffix_tokens=32, batch_size=32)
        ppl = evaluate_perplexity(model, tok, heldout, seq_len=args.seq_len, max_tokens=args.ppl_tokens)
        return {"strict": rec.strict_rate, "loose": rec.loose_rate, "perplexity": ppl.perplexity}

    t0 = time.time()
    base = measure()
    print(f"baseline: {base}", flush=True)
    layers_all = sorted({layer for s in layer_sets for layer in s})
    targets = resolve_targets(model, layers=layers_all, projections=args.projections.split(","))
    ids = pack_texts(tok, calibration, args.seq_len, args.calib_tokens)
    eig = eigenbases(collect_factors(model, iter_batches(ids, 8), targets, fisher=args.fisher, seed=args.seed))
    t1 = time.time()
    corr = collect_corrections(model, iter_batches(ids, 8), targets, eig, fisher=args.fisher, seed=args.seed)
    scores = {name: c.mean() for name, c in corr.items()}
    t2 = time.time()
    print(f"K-FAC factors + eigenbases {t1 - t0:.1f}s, EK-FAC corrections {t2 - t1:.1f}s ({ids.numel()} tokens)")

    original = {t.name: t.module(model).weight.detach().clone() for t in targets}
    rows: list[dict[str, Any]] = []
    print("| layers | ρ | estimator | strict | loose | perplexity | Δppl |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for layers in layer_sets:
        chosen = [t for t in targets if t.layer in layers]
        for rho in rhos:
            for est in ("kfac", "ekfac"):
                m = measured_edit(model, chosen, eig, scores, original, rho, est, measure)
                rise = m["perplexity"] / base["perplexity"] - 1
                rows.append({"layers": layers, "rho": rho, "estimator": est, **m, "ppl_rise": rise})
                print(
                    f"| {','.join(map(str, layers))} | {rho} | {est} | {m['strict']:.3f} | {m['loose']:.3f} | "
                    f"{m['perplexity']:.3f} | {rise * 100:+.1f}% |",
                    flush=True,
                )
    summary = summarise(rows, max_strict=0.05, max_rise=0.10)
    print("\nsummary (strict <= 5 %: smallest perplexity rise; rise <= 10 %: lowest strict recitation)")
    for key, s in summary.items():
        f, b = s["best_rise_at_forget"], s["best_strict_at_budget"]
        fs = f"rise {f['ppl_rise'] * 100:+.1f}% at rho {f['rho']}" if f else "never reaches strict <= 5 %"
        bs = f"strict {b['strict'] * 100:.1f}% at rho {b['rho']}" if b else "no point within +10 %"
        print(f"  {key}: {fs}; {bs}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"baseline": base, "rows": rows, "summary": summary}, indent=2) + "\n")
    if args.plot is not None:
        plot(rows, base, args.plot)
    print(f"done in {time.time() - t0:.0f}s; rerun: python scripts/frontier_estimators.py --plot <png>")


if __name__ == "__main__":
    main()
