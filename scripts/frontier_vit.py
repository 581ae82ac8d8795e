"""K-FAC vs EK-FAC on the noisy-label ViT: memorised-label accuracy vs held-out accuracy.

Trains the tiny ViT the tests train (``tests/vision_fixtures.py``: synthetic class-template
images, 15 % of the training labels flipped, trained until every training label -- flipped ones
included -- is predicted), collects the K-FAC factors over the training images once (sampled
Fisher, labels from the classifier's softmax), their eigenbases and the EK-FAC corrections; then
for every layer set and ``keep_mass`` ρ edits with each estimator (up + down of each layer),
measures the accuracy on the flipped images w.r.t. their flipped labels (memorised) and on the
clean held-out images, and restores the weights. Prints a Markdown table and a summary, writes
the rows as JSON and the frontier plot as PNG.

Usage: ``PYTHONPATH=. python scripts/frontier_vit.py [--layer-sets '0,1;0,1,2,3'] [--rhos ...]
[--out bench-results/frontier-vit.json] [--plot docs/img/estimators-vit-frontier.png]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from scripts.frontier_estimators import draw_estimator_curves, frontier_axes, measured_edit, save_frontier
from scripts.sweep_demo import parse_layer_sets
from tests.vision_fixtures import train_memorizing_vit
from workers.curvature import collect_factors, eigenbases, resolve_targets
from workers.curvature.ekfac import collect_corrections
from workers.vision.accuracy import accuracy
from workers.vision.images import ImageSet, image_batches


def summarise(rows: list[dict[str, Any]], max_heldout_drop: float) -> dict[str, dict[str, Any]]:
    """Per estimator and layer set: the lowest memorised accuracy whose held-out accuracy is at most
    ``max_heldout_drop`` below the baseline's."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['estimator']} layers {','.join(map(str, row['layers']))}"
        best = out.setdefault(key, {"best": None})
        if row["heldout_drop"] <= max_heldout_drop and (
            best["best"] is None or row["memorized"] < best["best"]["memorized"]
        ):
            best["best"] = row
    return out


def plot(rows: list[dict[str, Any]], base: dict[str, float], path: Path) -> None:
    fig, ax = frontier_axes()
    draw_estimator_curves(ax, rows, lambda r: 100 * r["heldout"], lambda r: 100 * r["memorized"])
    ax.scatter([100 * base["heldout"]], [100 * base["memorized"]], marker="*", s=160, color="black", label="unedited")
    ax.set_xlabel("clean held-out accuracy (%)  — higher is better")
    ax.set_ylabel("memorised (flipped) label accuracy (%)  — lower is better")
    ax.set_title("noisy-label ViT: K-FAC vs EK-FAC frontier (one point per ρ)")
    save_frontier(fig, ax, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer-sets", default="0,1;0,1,2,3")
    parser.add_argument("--rhos", default="0.95,0.9,0.85,0.8,0.7,0.6,0.5,0.4")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the labels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    data = train_memorizing_vit(Path(tempfile.mkdtemp(prefix="frontier-vit-")), seed=args.seed)
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(data.model_dir).eval()
    train = ImageSet(data.train_pixels, data.train_labels, "train")
    memorized = ImageSet(data.train_pixels[data.flipped], data.train_labels[data.flipped], "memorized")
    heldout = ImageSet(data.heldout_pixels, data.heldout_labels, "heldout")

    def measure() -> dict[str, float]:
        return {"memorized": accuracy(model, memorized, 256), "heldout": accuracy(model, heldout, 256)}

    base = measure()
    t1 = time.time()
    print(f"trained in {t1 - t0:.1f}s; baseline: {base}", flush=True)
    layer_sets = parse_layer_sets(args.layer_sets)
    layers_all = sorted({layer for s in layer_sets for layer in s})
    targets = resolve_targets(model, layers=layers_all, projections=["up", "down"])
    eig = eigenbases(collect_factors(model, image_batches(train, 32), targets, seed=args.seed, samples=args.samples))
    corr = collect_corrections(model, image_batches(train, 32), targets, eig, seed=args.seed, samples=args.samples)
    scores = {name: c.mean() for name, c in corr.items()}
    print(f"factors + eigenbases + corrections {time.time() - t1:.1f}s ({len(train)} images)", flush=True)

    original = {t.name: t.module(model).weight.detach().clone() for t in targets}
    rows: list[dict[str, Any]] = []
    print("| layers | ρ | estimator | memorised acc | held-out acc | Δ held-out |")
    print("|---|---:|---|---:|---:|---:|")
    for layers in layer_sets:
        chosen = [t for t in targets if t.layer in layers]
        for rho in [float(r) for r in args.rhos.split(",")]:
            for est in ("kfac", "ekfac"):
                m = measured_edit(model, chosen, eig, scores, original, rho, est, measure)
                row = {
                    "layers": layers,
                    "rho": rho,
                    "estimator": est,
                    **m,
                    "heldout_drop": base["heldout"] - m["heldout"],
                }
                rows.append(row)
                print(
                    f"| {','.join(map(str, layers))} | {rho:g} | {est} | {m['memorized']:.3f} | {m['heldout']:.3f} "
                    f"| {-row['heldout_drop']:+.3f} |",
                    flush=True,
                )
    summary = summarise(rows, max_heldout_drop=0.02)
    print(json.dumps({"baseline": base, "best_at_heldout_drop_0.02": summary}, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"baseline": base, "rows": rows, "summary": summary}, indent=1))
    if args.plot is not None:
        plot(rows, base, args.plot)
        print(f"plot: {args.plot}")
    print(
        "rerun: PYTHONPATH=. python scripts/frontier_vit.py --out docs/img/estimators-vit-frontier.json "
        "--plot docs/img/estimators-vit-frontier.png"
    )


if __name__ == "__main__":
    main()
