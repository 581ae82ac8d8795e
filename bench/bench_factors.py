"""Benchmark: K-FAC factor collection vs a plain forward + full backward over the same tokens.

A small random Llama (8 layers, hidden 256, intermediate 688, vocabulary 2048: the output head is
~7 % of the forward FLOPs, as in OLMo-2-7B) edits gate and up of its last quarter of layers.
``collect_factors`` (sampled Fisher: forward, chunked logits and label sampling, backward cut at
the earliest edited layer, no weight gradients, A/G accumulation) is timed against a plain
forward and against ``loss.backward()`` with weight gradients over the same batches; the target is
collection / (forward + full backward) <= 0.5 (docs/performance.md has the cost model). All are
timed in this one run (best of ``--repeats``, alternating), sized to finish in well under two
minutes on two busy CPU cores. Rerun with::

    python bench/bench_factors.py [--threads N] [--device cpu|cuda] [--precision fp32|tf32|bf16] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.tiny_models import build_model  # noqa: E402
from workers.curvature.factors import collect_factors  # noqa: E402
from workers.curvature.targets import resolve_targets  # noqa: E402

LAYERS, HIDDEN, INTERMEDIATE, HEADS, VOCAB = 8, 256, 688, 8, 2048
BATCHES, BATCH_SIZE, SEQ_LEN = 2, 2, 128


def full_backward(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["input_ids"][:, 1:].flatten())
        loss.backward()
    model.zero_grad(set_to_none=True)


def forward_only(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch["input_ids"], use_cache=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions (best is kept)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(
        "llama", vocab_size=VOCAB, hidden=HIDDEN, layers=LAYERS, intermediate=INTERMEDIATE, heads=HEADS
    ).to(device)
    gen = torch.Generator().manual_seed(0)
    batches = [
        {"input_ids": torch.randint(0, VOCAB, (BATCH_SIZE, SEQ_LEN), generator=gen).to(device)} for _ in range(BATCHES)
    ]
    quarter = max(1, LAYERS // 4)
    targets = resolve_targets(model, layers=list(range(LAYERS - quarter, LAYERS)), projections=["gate", "up"])

    def run_collect() -> None:
        collect_factors(model, batches, targets, fisher="sampled", precision=args.precision)

    def run_full() -> None:
        full_backward(model, batches)

    def run_forward() -> None:
        forward_only(model, batches)

    t_start = time.perf_counter()
    run_collect()  # warm-up (the others share its kernels)
    best = {"collect": float("inf"), "full": float("inf"), "forward": float("inf")}
    for _ in range(args.repeats):
        for key, fn in (("collect", run_collect), ("full", run_full), ("forward", run_forward)):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[key] = min(best[key], time.perf_counter() - t0)
    tokens = BATCHES * BATCH_SIZE * SEQ_LEN
    print(
        f"llama {LAYERS} layers hidden {HIDDEN}, editing gate+up of layers {[t.layer for t in targets][::2]}, "
        f"{tokens} tokens on {device} (threads={torch.get_num_threads()})"
    )
    print(
        f"collect_factors ({args.precision}) {best['collect']:.3f} s, forward + full backward {best['full']:.3f} s "
        f"-> ratio {best['collect'] / best['full']:.2f} (target <= 0.5); plain forward {best['forward']:.3f} s "
        f"-> collection = {best['collect'] / best['forward']:.2f} forward passes"
    )
    print(f"bench wall time {time.perf_counter() - t_start:.1f} s")
    print("rerun: python bench/bench_factors.py [--threads N] [--device cpu|cuda] [--precision P] [--repeats N]")


if __name__ == "__main__":
    main()
