"""bench/bench_gpu.py --small runs end to end at tiny sizes (a subprocess) and prints every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_small_run_prints_every_figure() -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--small", "--threads", "1"]
    cmd += [
        "--hidden",
        "32",
        "--intermediate",
        "64",
        "--vocab",
        "256",
        "--heads",
        "4",
        "--seq",
        "32",
        "--tokens",
        "128",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "Olmo2 4 layers hidden 32 MLP 64 vocab 256" in out and "128 tokens = 4 x 32" in out
    assert re.search(r"collection \(fp32, gate\+up of layers \[1, 2, 3\]\): [\d.]+ s = [\d,]+ tokens/s", out)
    assert re.search(r"collection = [\d.]+ forward passes", out)
    assert re.search(r"peak memory during collection: [\d.]+ GiB \(peak RSS of this process\); preflight", out)
    assert re.search(r"eigh: G \(64, 64\) [\d.]+ s, A \(32, 32\) [\d.]+ s", out)
    # at this size the heap finishes, and the two selections must keep the same pairs
    assert re.search(r"selection at \(64, 32\) rho 0\.9: curvature_mask [\d.]+ ms .*same pairs: True", out)
    assert re.search(r"projection of \(64, 32\) \(torch\.float32, float32 bases\): [\d.]+ s", out)
