"""Benchmark: what the accumulation precision (``curvature.precision``) does to factors and edits.

A random Llama (4 layers, hidden 256, MLP 688, vocabulary 2048) collects gate/up/down factors of
its last two layers over the same random tokens with ``precision`` fp32 (reference), tf32 and
bf16. On CPU tf32 and bf16 are emulated exactly as documented in ``workers.curvature.precision``
(inputs rounded to TF32 / bfloat16, products and sums in float32) -- the numerics of the GPU
paths, not their speed. Printed per precision (worst over targets):

* relative Frobenius error of ``A`` and ``G`` against fp32;
* at keep_mass 0.9 and 0.99: the fraction of fp32's kept eigen-pairs ``(i, j)`` whose keep/drop
  decision changes (symmetric difference / fp32 kept count), and the difference of the edited
  weights relative to the size of the fp32 edit, ``||W'_p - W'_fp32|| / ||W - W'_fp32||``.

Rerun with::

    python bench/bench_precision.py [--tokens N] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.tiny_models import build_model  # noqa: E402
from workers.curvature.edit import weight_matrix  # noqa: E402
from workers.curvature.eigen import eigenbases  # noqa: E402
from workers.curvature.factors import collect_factors  # noqa: E402
from workers.curvature.projection import project  # noqa: E402
from workers.curvature.selection import curvature_mask  # noqa: E402
from workers.curvature.targets import resolve_targets  # noqa: E402

LAYERS, HIDDEN, INTERMEDIATE, HEADS, VOCAB, SEQ_LEN, BATCH = 4, 256, 688, 8, 2048, 128, 8
RHOS = (0.9, 0.99)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192, help="calibration tokens (multiple of 128)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(
        "llama", vocab_size=VOCAB, hidden=HIDDEN, layers=LAYERS, intermediate=INTERMEDIATE, heads=HEADS, seed=1
    ).to(device)
    n_seq = max(1, args.tokens // SEQ_LEN)
    ids = torch.randint(0, VOCAB, (n_seq, SEQ_LEN), generator=torch.Generator().manual_seed(0)).to(device)
    batches = [{"input_ids": ids[i : i + BATCH]} for i in range(0, n_seq, BATCH)]
    targets = resolve_targets(model, layers=[LAYERS - 2, LAYERS - 1], projections=["gate", "up", "down"])
    factors, eigens, seconds = {}, {}, {}
    for precision in ("fp32", "tf32", "bf16"):
        t0 = time.perf_counter()
        factors[precision] = collect_factors(model, batches, targets, fisher="sampled", precision=precision)
        seconds[precision] = time.perf_counter() - t0
        eigens[precision] = eigenbases(factors[precision], dtype=torch.float64)
    print(
        f"llama {LAYERS} layers hidden {HIDDEN} MLP {INTERMEDIATE}, gate/up/down of layers {LAYERS - 2}-{LAYERS - 1}, "
        f"{n_seq * SEQ_LEN} tokens on {device}; tf32/bf16 {'emulated (CPU)' if device.type == 'cpu' else 'native'}"
    )
    header = f"{'precision':<9} {'A rel err':>10} {'G rel err':>10}"
    for rho in RHOS:
        header += f" {'pairs chg @' + str(rho):>16} {'dW/edit @' + str(rho):>14}"
    print(header + f" {'collect s':>10}")
    ref_f, ref_e = factors["fp32"], eigens["fp32"]
    for precision in ("fp32", "tf32", "bf16"):
        f, e = factors[precision], eigens[precision]
        a_err = max(rel(f[t.name].A_sum, ref_f[t.name].A_sum) for t in targets)
        g_err = max(rel(f[t.name].G_sum, ref_f[t.name].G_sum) for t in targets)
        row = f"{precision:<9} {a_err:>10.2e} {g_err:>10.2e}"
        for rho in RHOS:
            changed, dw = 0.0, 0.0
            for t in targets:
                w = weight_matrix(t, t.module(model)).detach().double()
                (g_ref, a_ref), (g_p, a_p) = ref_e[t.name], e[t.name]
                m_ref = curvature_mask(g_ref.values, a_ref.values, rho)
                m_p = curvature_mask(g_p.values, a_p.values, rho)
                changed = max(changed, float((m_ref ^ m_p).sum()) / max(1, int(m_ref.sum())))
                w_ref = project(w, g_ref.vectors, a_ref.vectors, m_ref)
                w_p = project(w, g_p.vectors, a_p.vectors, m_p)
                dw = max(dw, float((w_p - w_ref).norm() / (w - w_ref).norm()))
            row += f" {changed:>16.2e} {dw:>14.2e}"
        print(row + f" {seconds[precision]:>10.2f}")
    print("(worst over the 6 targets; fp32 rows are 0 by construction)")
    print("rerun: python bench/bench_precision.py [--tokens N] [--threads N] [--device cpu|cuda]")


if __name__ == "__main__":
    main()
