"""Benchmark: the edit-side costs of one target against the cost model in docs/performance.md.

For one (out, in) target (default the 1024 x 2816 MLP of a mid-size model; ``--out 11008 --in
4096`` is OLMo-2-7B's gate/up) it times, on this machine's CPU, in one run: ``eigh`` of the A and G
factors, ``curvature_mask`` (search + mask), one sweep point's projection with ``C`` reused
(``unrotate``: mask and two products) and without (``project``: four products). Each line prints
the model's FLOPs, the time and the achieved GFLOP/s; the last line the projection ratio
``project / unrotate`` a sweep saves per point. Rerun with::

    python bench/bench_edit_costs.py [--out 1024] [--in 2816] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from workers.curvature.projection import project, rotate, unrotate  # noqa: E402
from workers.curvature.selection import curvature_mask  # noqa: E402


def best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=int, default=1024, help="output features (G is out x out)")
    parser.add_argument("--in", dest="inp", type=int, default=2816, help="input features (A is in x in)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    m, n = args.out, args.inp
    gen = torch.Generator().manual_seed(0)
    xa = torch.randn(n, 2 * n, generator=gen)
    xg = torch.randn(m, 2 * m, generator=gen)
    a, g = xa @ xa.T / (2 * n), xg @ xg.T / (2 * m)
    w = torch.randn(m, n, generator=gen) / n**0.5

    def gflops(flops: float, seconds: float) -> str:
        return f"{flops / 1e9:9.2f} GFLOP {seconds * 1e3:9.1f} ms {flops / seconds / 1e9:7.1f} GFLOP/s"

    t_eig_a = best_of(lambda: torch.linalg.eigh(a), args.repeats)
    t_eig_g = best_of(lambda: torch.linalg.eigh(g), args.repeats)
    mu, ua = torch.linalg.eigh(a)
    lam, ug = torch.linalg.eigh(g)
    mu, ua, lam, ug = mu.flip(0).clamp(min=0), ua.flip(1), lam.flip(0).clamp(min=0), ug.flip(1)
    t_sel = best_of(lambda: curvature_mask(lam, mu, 0.6), max(args.repeats, 3))
    mask = curvature_mask(lam, mu, 0.6)
    c = rotate(w, ug, ua)
    t_proj = best_of(lambda: project(w, ug, ua, mask), args.repeats)
    t_unrot = best_of(lambda: unrotate(c, ug, ua, mask, w.dtype), args.repeats)
    two_products = 2.0 * (m * m * n + m * n * n)
    print(f"target {m} x {n} on CPU, {torch.get_num_threads()} threads")
    print(f"eigh A ({n}^2), model 10 n^3     : {gflops(10.0 * n**3, t_eig_a)}")
    print(f"eigh G ({m}^2), model 10 n^3     : {gflops(10.0 * m**3, t_eig_g)}")
    print(f"curvature_mask (search + mask)   : {t_sel * 1e3:9.1f} ms  ({m * n / 1e6:.1f} M pairs, mask included)")
    print(f"project (rotate + unrotate)      : {gflops(2 * two_products, t_proj)}")
    print(f"unrotate (a sweep point, C kept) : {gflops(two_products, t_unrot)}")
    print(f"per sweep point: project / unrotate = {t_proj / t_unrot:.2f}x (model: 2x)")
    print("rerun: python bench/bench_edit_costs.py [--out M] [--in N] [--threads T]")


if __name__ == "__main__":
    main()
