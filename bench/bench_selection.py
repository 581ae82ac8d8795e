"""Benchmark: curvature_mask (host staircase search + mask) vs the obvious per-pair heap selection.

Prints, measured in one run, against the two targets: the heap / curvature_mask time ratio at
1024 x 2816 (target >= 200x; both must keep exactly the same pairs), and the time of
curvature_mask alone, mask included, at the real 7B gate/up shape 4096 x 11008 (target < 50 ms).
Rerun with::

    python bench/bench_selection.py [--threads N]

It runs on one intra-op thread by default: the heap is single-threaded Python, and on a
shared CPU torch's thread pool wake-ups dominate these millisecond kernels.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from workers.curvature.selection import curvature_mask  # noqa: E402

RHO = 0.6


def power_law_spectrum(n: int, alpha: float, seed: int) -> torch.Tensor:
    """Descending, K-FAC-like spectrum: power-law decay with multiplicative noise."""
    gen = torch.Generator().manual_seed(seed)
    v = (torch.arange(1, n + 1, dtype=torch.float64) ** -alpha) * (1 + 0.1 * torch.rand(n, generator=gen))
    return torch.sort(v, descending=True).values.float()


def heap_mask(lam: torch.Tensor, mu: torch.Tensor, rho: float) -> torch.Tensor:
    """Pop the largest remaining product from a heap until the kept mass reaches rho * total."""
    lam_l, mu_l = lam.double().tolist(), mu.double().tolist()
    m, n = len(lam_l), len(mu_l)
    target = rho * sum(lam_l) * sum(mu_l)
    mask = torch.zeros(m, n, dtype=torch.bool)
    heap = [(-lam_l[0] * mu_l[0], 0, 0)]
    seen = {(0, 0)}
    kept = 0.0
    while kept < target and heap:
        neg, i, j = heapq.heappop(heap)
        mask[i, j] = True
        kept -= neg
        for a, b in ((i + 1, j), (i, j + 1)):
            if a < m and b < n and (a, b) not in seen:
                seen.add((a, b))
                heapq.heappush(heap, (-lam_l[a] * mu_l[b], a, b))
    return mask


def timed(fn: Callable[[], torch.Tensor], repeats: int = 3) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), torch.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    torch.set_num_threads(parser.parse_args().threads)
    lam, mu = power_law_spectrum(1024, 0.8, 0), power_law_spectrum(2816, 0.7, 1)
    t_fast, fast = timed(lambda: curvature_mask(lam, mu, RHO))
    t_heap, slow = timed(lambda: heap_mask(lam, mu, RHO), repeats=1)
    same = bool(torch.equal(fast, slow))
    share = float(fast.float().mean())
    print(
        f"1024x2816 rho={RHO}: kept {int(fast.sum())} pairs ({share:.1%}) (heap kept {int(slow.sum())}, same={same}); "
        f"heap {t_heap:.3f} s, curvature_mask {t_fast * 1e3:.1f} ms -> ratio heap/curvature_mask = "
        f"{t_heap / t_fast:.1f}x (target >= 200x: {'met' if t_heap / t_fast >= 200 else 'MISSED'})"
    )
    big_lam, big_mu = power_law_spectrum(4096, 0.8, 2), power_law_spectrum(11008, 0.7, 3)
    t_big, big = timed(lambda: curvature_mask(big_lam, big_mu, RHO))
    print(
        f"4096x11008 rho={RHO}: curvature_mask {t_big * 1e3:.1f} ms on CPU (best of 3, mask included), "
        f"kept {int(big.sum())} pairs (target < 50 ms: {'met' if t_big < 0.05 else 'MISSED'})"
    )
    print(f"threads={torch.get_num_threads()}; rerun: python bench/bench_selection.py --threads N")


if __name__ == "__main__":
    main()
