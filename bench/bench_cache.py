"""Benchmark: the factor cache. Job 1 collects K-FAC factors and eigendecomposes them; job 2 on
the same model and calibration data with another keep_mass is served from the cache
(``collect_factors`` and ``eigendecompose`` skipped). Prints both jobs' stage timings and the
speedup of job 2 over job 1, measured in this one run (target: >= 5x on the demo model).

Model and job: ``examples/demo`` with ``examples/demo-edit.json`` when both exist (evaluation left
out unless ``--with-eval``), otherwise a tiny Llama saved to a temporary directory and a generated
corpus. Cache: Redis at ``CURVEDIT_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/14``; only the entries this run writes are removed afterwards), or the
filesystem tier with ``--cache fs``.

Rerun: ``.venv/bin/python bench/bench_cache.py [--cache redis|fs] [--tokens 20000] [--with-eval]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract.settings import Settings  # noqa: E402
from contract.spec import EditJobSpec  # noqa: E402
from workers.cache import open_factor_cache  # noqa: E402
from workers.pipeline.reporting import NullReporter  # noqa: E402
from workers.pipeline.run import run_pipeline  # noqa: E402

DEMO = REPO / "examples" / "demo"


def demo_spec(with_eval: bool) -> dict | None:
    """The demo job (model path relative to the repository), or None when the demo is not built."""
    spec_file = REPO / "examples" / "demo-edit.json"
    if not ((DEMO / "config.json").is_file() and spec_file.is_file()):
        return None
    raw = json.loads(spec_file.read_text())
    # the demo spec is goal-directed; this benchmark needs a plain edit whose keep_mass it can vary
    raw.pop("objective", None)
    raw["edit"] = {"layers": [0, 1, 2, 3], "projections": ["gate", "up"], "keep_mass": 0.985}
    if not with_eval:
        raw.pop("evaluation", None)
    raw.pop("output", None)
    return raw


def tiny_spec(tmp: Path, tokens: int) -> dict:
    from tests.tiny_models import save_tiny

    save_tiny(tmp / "models" / "bench-llama", "llama", hidden=128, layers=4, intermediate=512, heads=4)
    words = "the quick brown fox jumps over the lazy dog alice sends bob a letter about weather".split()  # noqa: SIM905
    texts = [" ".join(words[(i + j) % len(words)] for j in range(40)) + f" {i}" for i in range(4000)]
    return {
        "model": {"path": "bench-llama"},
        "calibration": {"texts": texts, "max_tokens": tokens, "seq_len": 128, "batch_size": 8},
        "edit": {"layers": [-2, -1], "projections": ["gate", "up"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", choices=("redis", "fs"), default="redis")
    ap.add_argument("--tokens", type=int, default=20_000, help="calibration token budget (tiny model only)")
    ap.add_argument("--with-eval", action="store_true", help="keep the demo spec's evaluation in both jobs")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        base = demo_spec(args.with_eval)
        model_root = data_root = REPO / "examples"  # the demo spec's paths are relative to examples/
        if base is None:
            base = tiny_spec(tmp, args.tokens)
            model_root, data_root = tmp / "models", REPO
        base.setdefault("curvature", {})["seed"] = int(time.time()) % 100_000  # fresh key: job 1 is a miss
        cache_setting = "redis" if args.cache == "redis" else str(tmp / "factor-cache")
        settings = Settings(
            model_root=model_root,
            output_root=tmp / "out",
            data_root=data_root,
            redis_url=os.environ.get("CURVEDIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
            factor_cache=cache_setting,
        )
        cache = open_factor_cache(settings)
        before = {e["key"] for e in cache.entries()} if cache is not None else set()
        first = base.get("edit", {}).get("keep_mass", 0.9)
        first = float(first[0] if isinstance(first, list) else first)
        second = round(first * 0.9, 4)  # another keep_mass: the cache must serve it
        runs = []
        for job, rho in (("bench-first", first), ("bench-second", second)):
            spec = EditJobSpec.model_validate({**base, "edit": {**base.get("edit", {}), "keep_mass": rho}})
            t0 = time.perf_counter()
            result = run_pipeline(spec, settings=settings, job_id=job, reporter=NullReporter(), cache=cache)
            runs.append((time.perf_counter() - t0, result))
        if cache is not None:
            for entry in cache.entries():
                if entry["key"] not in before:
                    cache.delete(entry["key"])
        model_name = base["model"].get("path") or base["model"].get("hub_id")

    (t1, r1), (t2, r2) = runs
    print(f"model: {model_name}  calibration tokens: {r1['tokens']}  cache: {args.cache}")
    for label, total, res in (("job 1 (cold)", t1, r1), ("job 2 (cached)", t2, r2)):
        stages = "  ".join(f"{k}={v:.2f}s" for k, v in res["timings"].items() if k != "total")
        print(f"{label:15s} total={total:7.2f}s  {stages}  cached={[k for k, v in res['cached_stages'].items() if v]}")
    curv1 = r1["timings"]["collect_factors"] + r1["timings"]["eigendecompose"]
    curv2 = r2["timings"]["collect_factors"] + r2["timings"]["eigendecompose"]
    print(f"speedup, whole job (job 1 / job 2): {t1 / t2:.1f}x   (target >= 5x)")
    print(f"collect_factors + eigendecompose: {curv1:.2f}s cold vs {curv2:.4f}s from the cache")
    print("rerun: .venv/bin/python bench/bench_cache.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
