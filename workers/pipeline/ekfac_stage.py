"""EK-FAC in the pipeline: the eigenvalue corrections ``s_ij`` per target, from the factor cache
where possible (``curvature.estimator = "ekfac"``).

Runs at the end of the curvature stage, after the eigenbases. Each target's correction sum is a
cache entry of kind ``S`` whose key carries the factor-sum arguments (model and corpus
fingerprints, token budget, ``seq_len``, Fisher type, seed, samples, precision) plus the digests of
the two eigenbasis entries it was measured in, so a correction is only reused with the very
eigenbases it belongs to. Missing corrections are collected in one more pass over the same packed
calibration rows (in-process, not sharded). The manifest reports them under ``cache["ekfac"]``
(hits and misses) and ``cache_keys["S:<target>"]``; events of kind ``ekfac`` say what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from workers.cache import CacheKey, FactorCache
from workers.curvature import EditTarget, Eigen
from workers.curvature.ekfac import collect_corrections
from workers.pipeline.curvature_stage import CurvatureInputs, pack_calibration
from workers.pipeline.image_rows import calibration_batches
from workers.pipeline.reporting import Reporter


@dataclass
class Corrections:
    """EK-FAC ``s`` (mean, out x in, float32 on the weight's device) per target name."""

    scores: dict[str, torch.Tensor]
    cache: dict[str, int] = field(default_factory=dict)  # {"hits", "misses"}
    keys: dict[str, str] = field(default_factory=dict)  # "S:<target>" -> digest


def correction_key(inputs: CurvatureInputs, target: EditTarget) -> CacheKey:
    """Cache key of one target's correction sum: factor-sum args + the eigenbases' identities."""
    eig_a = inputs.key(("A", target.input_key), eig=True)
    eig_g = inputs.key(("G", target.name), eig=True)
    args: dict[str, Any] = {
        **inputs.sum_args("G"),
        "estimator": "ekfac",
        "eigenbasis": {"A": eig_a.digest, "G": eig_g.digest},
    }
    return CacheKey(kind="S", module=target.name, args=args, model=inputs.model_label)


def compute_corrections(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    eigens: dict[str, tuple[Eigen, Eigen]],
    *,
    reporter: Reporter,
    cache: FactorCache | None,
    key_for: Any = correction_key,
) -> Corrections:
    """``s`` per target (cache first, then one pass for the missing ones); ``key_for(inputs, target)``
    builds the cache key (the factor union passes its own)."""
    sums: dict[str, tuple[torch.Tensor, int]] = {}
    keys = {t.name: key_for(inputs, t) for t in targets}
    if cache is not None:
        for t in targets:
            got = cache.get(keys[t.name])
            if got is not None:
                sums[t.name] = (got["sum"], int(got["count"]))
    need = [t for t in targets if t.name not in sums]
    if need:
        ids = pack_calibration(inputs)
        reporter.event(
            "info",
            f"collecting EK-FAC eigenvalue corrections for {len(need)} target(s) over {int(ids.numel())} tokens",
            {"kind": "ekfac", "targets": [t.name for t in need], "tokens": int(ids.numel()), "cached": False},
        )

        def progress(done: int, total: int | None) -> None:
            reporter.progress(done / total if total else 0.0, tokens_done=done, tokens_total=total)

        got_new = collect_corrections(
            model,
            calibration_batches(ids, inputs.batch_size),
            need,
            {t.name: eigens[t.name] for t in need},
            inputs.fisher,  # type: ignore[arg-type]
            seed=inputs.seed,
            samples=inputs.samples,
            precision=inputs.precision,  # type: ignore[arg-type]
            logits_chunk=inputs.logits_chunk,
            total_tokens=int(ids.numel()),
            progress=progress,
            should_cancel=reporter.cancelled,
        )
        for t in need:
            c = got_new[t.name]
            sums[t.name] = (c.S_sum, c.count)
            if cache is not None:
                cache.put(keys[t.name], {"sum": c.S_sum, "count": torch.tensor(int(c.count), dtype=torch.int64)})
    else:
        reporter.event(
            "info",
            "EK-FAC eigenvalue corrections served from the factor cache",
            {"kind": "ekfac", "targets": [t.name for t in targets], "cached": True},
        )
    scores = {}
    for t in targets:
        mat, count = sums[t.name]
        dev = eigens[t.name][0].vectors.device
        scores[t.name] = (mat.to(device=dev, dtype=torch.float32) / max(count, 1)).contiguous()
    return Corrections(
        scores=scores,
        cache={"hits": len(targets) - len(need), "misses": len(need)},
        keys={f"S:{name}": k.digest for name, k in keys.items()},
    )
