"""ρ × layer sweep of curvature edits on the demo model (how ``examples/demo-edit.json`` was chosen).

Collects K-FAC factors once (curvature engine, all candidate layers in one pass over the calibration
corpus), then for every layer set and ``keep_mass`` ρ edits a copy of the weights, measures strict
recitation of the planted records, held-out perplexity and nDCG@10 against the unedited model, and
restores the weights. Prints a Markdown table and writes the rows as JSON.

Usage: ``python scripts/sweep_demo.py [--model examples/demo] [--out sweep.json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.curvature import collect_factors, eigenbases, iter_batches, pack_texts, resolve_targets
from workers.curvature.edit import apply_edit
from workers.evaluation import (
    evaluate_agreement,
    evaluate_perplexity,
    evaluate_recitation,
    reference_topk_for_texts,
)


def read_blocks(path: Path) -> list[str]:
    """A .txt corpus: one document per blank-line-separated block."""
    return [b.strip() for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]


def read_pairs(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["prefix"], r["suffix"]) for r in rows]


def parse_layer_sets(text: str) -> list[list[int]]:
    """'0,1,2,3;2,3;3' -> [[0,1,2,3],[2,3],[3]]."""
    return [[int(x) for x in part.split(",")] for part in text.split(";") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("examples/demo"))
    parser.add_argument("--layer-sets", default="0,1,2,3;1,2;2,3;0,1;3")
    parser.add_argument("--projections", default="gate,up")
    parser.add_argument("--rhos", default="0.5,0.6,0.7,0.8,0.9,0.95,0.98")
    parser.add_argument("--calib-tokens", type=int, default=20_000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ppl-tokens", type=int, default=10_000)
    parser.add_argument("--prefix-tokens", type=int, default=32)
    parser.add_argument("--suffix-tokens", type=int, default=32)
    parser.add_argument("--fisher", default="sampled")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled-Fisher labels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    pairs = read_pairs(args.model / "memorized.jsonl")
    heldout = read_blocks(args.model / "heldout.txt")
    calibration = read_blocks(args.model / "calibration.txt")
    layer_sets = parse_layer_sets(args.layer_sets)
    projections = args.projections.split(",")
    rhos = [float(r) for r in args.rhos.split(",")]

    def measure() -> dict[str, float]:
        rec = evaluate_recitation(
            model, tok, pairs, prefix_tokens=args.prefix_tokens, suffix_tokens=args.suffix_tokens, batch_size=32
        )
        ppl = evaluate_perplexity(model, tok, heldout, seq_len=args.seq_len, max_tokens=args.ppl_tokens)
        return {"strict": rec.strict_rate, "loose": rec.loose_rate, "perplexity": ppl.perplexity}

    t0 = time.time()
    reference = reference_topk_for_texts(model, tok, heldout, k=10, seq_len=args.seq_len, max_tokens=4_000)
    base = measure()
    print(f"baseline: {base}", flush=True)

    all_layers = sorted({layer for s in layer_sets for layer in s})
    targets = resolve_targets(model, layers=all_layers, projections=projections)
    ids = pack_texts(tok, calibration, args.seq_len, args.calib_tokens)
    factors = collect_factors(model, iter_batches(ids, 8), targets, fisher=args.fisher, seed=args.seed)
    eig = eigenbases(factors)
    print(f"factors + eigenbases for {len(targets)} targets in {time.time() - t0:.1f}s", flush=True)

    original = {t.name: t.module(model).weight.detach().clone() for t in targets}
    rows = []
    print("| layers | ρ | strict | loose | perplexity | Δppl | nDCG@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for layers in layer_sets:
        chosen = [t for t in targets if t.layer in layers]
        for rho in rhos:
            apply_edit(model, chosen, eig, keep_mass=rho)
            m = measure()
            m["ndcg"] = evaluate_agreement(model, reference).ndcg
            with torch.no_grad():
                for t in chosen:
                    t.module(model).weight.copy_(original[t.name])
            rise = m["perplexity"] / base["perplexity"] - 1
            row = {"layers": layers, "rho": rho, **m, "ppl_rise": rise}
            rows.append(row)
            print(
                f"| {','.join(map(str, layers))} | {rho} | {m['strict']:.3f} | {m['loose']:.3f} | "
                f"{m['perplexity']:.3f} | {rise * 100:+.1f}% | {m['ndcg']:.3f} |",
                flush=True,
            )
    if args.out is not None:
        args.out.write_text(json.dumps({"baseline": base, "rows": rows}, indent=2) + "\n")
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
