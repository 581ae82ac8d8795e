"""Benchmark: seed-to-seed spread of an edit for ``curvature.samples`` = 1, 4 and 16.

On the committed demo model (``examples/demo``: Llama, 4 layers, hidden 128, MLP 512, 32 planted
records) with the demo's calibration (``calibration.txt``, 20 000 tokens, sequences of 128,
sampled Fisher), factors are collected for gate and up of all four layers with seeds 0-3 and each
``samples`` value; then two fixed edits are applied from the original weights:

* ``layers 1-2 gate+up rho 0.85`` (the setting where one label per position was seed-sensitive);
* ``layers 0-3 gate+up rho 0.985`` (the demo's previous fixed edit).

For each (edit, samples) the table gives the strict recitation rate of the 32 records (greedy,
32-token prefix, 32-token suffix) per seed, its range (max - min) and standard deviation over
the seeds, and the same for the relative weight change ``||W' - W|| / ||W||`` over the edited
matrices. Collection time per seed is printed too (samples share one forward pass per batch).

Rerun with::

    python bench/bench_samples.py [--samples 1 4 16] [--seeds 0 1 2 3] [--max-tokens 20000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from workers.curvature.calibration import iter_batches, pack_texts  # noqa: E402
from workers.curvature.edit import apply_edit  # noqa: E402
from workers.curvature.eigen import eigenbases  # noqa: E402
from workers.curvature.factors import collect_factors  # noqa: E402
from workers.curvature.targets import resolve_targets  # noqa: E402
from workers.evaluation.recitation import evaluate_recitation  # noqa: E402

DEMO = ROOT / "examples" / "demo"
EDITS = (("layers 1-2 gate+up rho 0.85", [1, 2], 0.85), ("layers 0-3 gate+up rho 0.985", [0, 1, 2, 3], 0.985))


def spread(values: list[float]) -> str:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"range {max(values) - min(values):.3f} sd {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--max-tokens", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(DEMO)
    model = AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32)
    raw = (DEMO / "calibration.txt").read_text(encoding="utf-8")
    texts = [b.strip() for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    ids = pack_texts(tokenizer, texts, seq_len=128, max_tokens=args.max_tokens)
    records = [json.loads(line) for line in (DEMO / "memorized.jsonl").read_text().splitlines() if line.strip()]
    pairs = [(r["prefix"], r["suffix"]) for r in records]
    all_targets = resolve_targets(model, layers=[0, 1, 2, 3], projections=["gate", "up"])
    originals = {t.name: t.module(model).weight.detach().clone() for t in all_targets}

    def recite() -> float:
        rep = evaluate_recitation(model, tokenizer, pairs, prefix_tokens=32, suffix_tokens=32, batch_size=32)
        return rep.strict_rate

    def restore() -> None:
        with torch.no_grad():
            for t in all_targets:
                t.module(model).weight.copy_(originals[t.name])

    base = recite()
    print(f"demo model, {ids.numel()} calibration tokens, {len(pairs)} records; unedited strict recitation {base:.3f}")
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    for samples in args.samples:
        for seed in args.seeds:
            t0 = time.perf_counter()
            factors = collect_factors(model, iter_batches(ids, 8), all_targets, "sampled", seed=seed, samples=samples)
            seconds = time.perf_counter() - t0
            eigens = eigenbases(factors, dtype=torch.float64)
            for label, layers, rho in EDITS:
                targets = [t for t in all_targets if t.layer in layers]
                restore()
                reports = apply_edit(model, targets, eigens, rho)
                num = sum(float((t.module(model).weight.detach() - originals[t.name]).norm()) ** 2 for t in targets)
                den = sum(float(originals[t.name].norm()) ** 2 for t in targets)
                assert len(reports) == len(targets)
                cell = rows.setdefault((label, samples), {"recite": [], "change": [], "seconds": []})
                cell["recite"].append(recite())
                cell["change"].append((num / den) ** 0.5)
                cell["seconds"].append(seconds)
            restore()
            done = "; ".join(
                f"{label}: recitation {rows[(label, samples)]['recite'][-1]:.3f} "
                f"change {rows[(label, samples)]['change'][-1]:.4f}"
                for label, _, _ in EDITS
            )
            print(f"  samples {samples:>2} seed {seed}: collected in {seconds:.1f} s; {done}", flush=True)
    print()
    print(
        f"{'edit':<30} {'samples':>7}  {'strict recitation per seed':<30} {'spread':<22} "
        f"{'weight change per seed':<34} {'spread':<22} {'collect s':>9}"
    )
    for label, _, _ in EDITS:
        for samples in args.samples:
            c = rows[(label, samples)]
            rec = " ".join(f"{v:.3f}" for v in c["recite"])
            chg = " ".join(f"{v:.4f}" for v in c["change"])
            print(
                f"{label:<30} {samples:>7}  {rec:<30} {spread(c['recite']):<22} {chg:<34} "
                f"{spread(c['change']):<22} {statistics.mean(c['seconds']):>9.1f}"
            )
    print("rerun: python bench/bench_samples.py [--samples 1 4 16] [--seeds 0 1 2 3] [--max-tokens 20000]")


if __name__ == "__main__":
    main()
