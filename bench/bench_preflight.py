"""Benchmark: the preflight memory model (contract/preflight.py) against measured CPU peaks.

For several tiny Llama shapes (widths and vocabularies) one factor collection (gate + up of the
last two layers, ``--batch`` x ``--seq`` tokens, float32 on CPU) runs in a fresh subprocess; the
peak resident set (VmHWM, reset through /proc/self/clear_refs just before the collection) minus
the resident set before it is the measured transient. The preflight's estimate of the same terms
(accumulators + activations + logits chunk) is printed beside it with the relative error, and the
whole-process peak (weights included, measured from after ``import torch``) against the preflight
peak. Linux only. Rerun with::

    python bench/bench_preflight.py [--batch 4] [--seq 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

SHAPES = [  # hidden, intermediate, vocab, heads
    (256, 704, 8192, 4),
    (512, 1408, 16384, 8),
    (768, 2048, 32000, 12),
    (1024, 2816, 50000, 16),
]
LAYERS = 4


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(hidden: int, intermediate: int, vocab: int, heads: int, batch: int, seq: int) -> dict[str, int]:
    """Runs in the child: measured bytes of one collection."""
    import torch

    torch.set_num_threads(1)
    base = _status_kb("VmRSS")
    from tests.tiny_models import build_model
    from workers.curvature import collect_factors, resolve_targets

    model = build_model(
        "llama", vocab_size=vocab, hidden=hidden, intermediate=intermediate, layers=LAYERS, heads=heads
    ).float()
    targets = resolve_targets(model, layers=[-2, -1], projections=["gate", "up"])
    gen = torch.Generator().manual_seed(0)
    warm = [{"input_ids": torch.randint(0, vocab, (1, 8), generator=gen)}]
    collect_factors(model, warm, targets)  # kernels, thread pools, allocator warm
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    collect_factors(model, [{"input_ids": ids}], targets)
    peak = _status_kb("VmHWM")
    return {"before": before * 1024, "peak": peak * 1024, "base": base * 1024}


def estimate_for(hidden: int, intermediate: int, vocab: int, heads: int, batch: int, seq: int) -> dict[str, int]:
    from contract.preflight import Capacity, JobShape, TargetShape, estimate, model_dims
    from tests.preflight_models import llama_style_shapes

    cfg = {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    shapes = {k: tuple(v) for k, v in llama_style_shapes(cfg).items()}
    targets = [TargetShape(layer, intermediate, hidden) for layer in (LAYERS - 2, LAYERS - 1) for _ in range(2)]
    job = JobShape("float32", batch, seq, batch * seq, 1024, 1, "float32", 1)
    est = estimate(model_dims(cfg, shapes), targets, job, Capacity())
    m = est.memory
    return {
        "transient": m["accumulators"] + est.phase_bytes["collection"],
        "peak": est.peak_bytes,
        "weights": m["weights"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(*json.loads(args.child), args.batch, args.seq)))
        return
    mib = 2**20
    errors = []
    print(f"tiny Llama, {LAYERS} layers, gate+up of the last 2, float32 CPU, {args.batch} x {args.seq} tokens")
    print("hidden  inter  vocab | transient est   meas   err | process peak est   meas   err")
    for shape in SHAPES:
        child = ["--child", json.dumps(shape), "--batch", str(args.batch), "--seq", str(args.seq)]
        out = subprocess.run(
            [sys.executable, __file__, *child],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        est = estimate_for(*shape, args.batch, args.seq)
        meas_t = got["peak"] - got["before"]
        meas_p = got["peak"] - got["base"]
        err_t = est["transient"] / meas_t - 1
        err_p = est["peak"] / meas_p - 1
        errors.append((err_t, err_p))
        print(
            f"{shape[0]:6d} {shape[1]:6d} {shape[2]:6d} | {est['transient'] / mib:10.0f} {meas_t / mib:6.0f} "
            f"{err_t:+5.0%} | {est['peak'] / mib:12.0f} {meas_p / mib:6.0f} {err_p:+5.0%}   (MiB)"
        )
    worst_t = max(abs(e[0]) for e in errors)
    worst_p = max(abs(e[1]) for e in errors)
    print(f"worst |error|: transient {worst_t:.0%}, process peak {worst_p:.0%} (estimate / measured - 1)")
    print("rerun: python bench/bench_preflight.py [--batch N] [--seq N]")


if __name__ == "__main__":
    main()
