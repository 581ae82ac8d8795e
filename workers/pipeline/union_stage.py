"""Factor union: curvature from several calibration corpora with weights (``calibration.sources``).

Each source is a corpus of its own with its own cache keys (``CurvatureInputs`` of that corpus:
the same keys a single-corpus job on it would use), so its K-FAC sums are collected once and
re-used by every union that contains it. The union's factors are the weighted sum of the
per-source means, ``A = Σ_k w_k A_sum_k / n_k`` (and ``G`` alike), with the weights normalised to
sum to 1; their eigenbases are cached under a key naming the per-source sum keys and the
weights, so changing a weight re-uses every source's sums and only redoes the (cheap next to
collection) eigendecomposition. EK-FAC on a union measures each source's correction in the
union's eigenbases (cached per source under a key naming those eigenbases) and sums them with
the same weights: ``s = Σ_k w_k s_k``. Sources are collected in-process, one pass each
(``settings.collect_shards`` does not apply to unions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from workers.cache import CacheKey, FactorCache
from workers.cache.keys import EntryKind
from workers.curvature import EditTarget, Eigen, eigendecompose
from workers.pipeline.curvature_stage import (
    CurvatureInputs,
    CurvatureResult,
    FactorId,
    _device_of,
    _entry,
    _factor_ids,
    collect_sums,
    eigens_on_devices,
    pack_calibration,
    report_factor_stats,
)
from workers.pipeline.ekfac_stage import Corrections, compute_corrections
from workers.pipeline.reporting import JobCancelled, Reporter, Stage


def union_key(sources: list[CurvatureInputs], weights: list[float], fid: FactorId) -> CacheKey:
    """Cache key of the union's eigenbasis of factor ``fid``: the per-source sum keys and weights."""
    kind, module = fid
    entry: EntryKind = "A_eig" if kind == "A" else "G_eig"
    parts = [[src.key(fid, eig=False).digest, float(w)] for src, w in zip(sources, weights, strict=True)]
    args: dict[str, Any] = {"union": parts, "eig_dtype": sources[0].eig_dtype}
    return CacheKey(kind=entry, module=module, args=args, model=sources[0].model_label)


def _source_sums(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    index: int,
    *,
    reporter: Reporter,
    cache: FactorCache | None,
) -> tuple[dict[FactorId, tuple[torch.Tensor, int]], int]:
    """One source's K-FAC sums (cache first, then one pass); returns them and the factors collected."""
    fids = _factor_ids(targets)
    sums: dict[FactorId, tuple[torch.Tensor, int]] = {}
    if cache is not None:
        for fid in fids:
            got = cache.get(inputs.key(fid, eig=False))
            if got is not None:
                sums[fid] = (got["sum"], int(got["count"]))
    need = [fid for fid in fids if fid not in sums]
    need_targets = [t for t in targets if ("A", t.input_key) in need or ("G", t.name) in need]
    if need_targets:
        ids = pack_calibration(inputs)
        reporter.event(
            "info",
            f"collecting K-FAC factors of calibration source {index} for {len(need_targets)} target(s) "
            f"over {int(ids.numel())} tokens",
            {"kind": "collect", "source": index, "targets": [t.name for t in need_targets], "tokens": int(ids.numel())},
        )

        def progress(done: int, total: int | None) -> None:
            reporter.progress(done / total if total else 0.0, tokens_done=done, tokens_total=total)

        collected = collect_sums(model, need_targets, inputs, ids, progress=progress, should_cancel=reporter.cancelled)
        for fid in need:
            sums[fid] = collected[fid]
            if cache is not None:
                cache.put(inputs.key(fid, eig=False), _entry(*collected[fid]))
    return sums, len(need)


def compute_union_curvature(
    model: Any,
    targets: list[EditTarget],
    sources: list[CurvatureInputs],
    weights: list[float],
    *,
    reporter: Reporter,
    cache: FactorCache | None,
    on_stage: Callable[[Stage, bool], None],
) -> CurvatureResult:
    """Eigenbases of the weighted union of the sources' factor means (``weights`` sum to 1)."""
    fids = _factor_ids(targets)
    eig: dict[FactorId, Eigen] = {}
    if cache is not None:
        for fid in fids:
            got = cache.get(union_key(sources, weights, fid))
            if got is not None:
                eig[fid] = Eigen(got["values"], got["vectors"])
    missing_eig = [fid for fid in fids if fid not in eig]
    # Sums are only needed for eigenbases not in the cache.
    need_sums = [t for t in targets if ("A", t.input_key) in missing_eig or ("G", t.name) in missing_eig]
    per_source: list[dict[FactorId, tuple[torch.Tensor, int]]] = []
    collected = 0
    for i, src in enumerate(sources):
        if reporter.cancelled():
            raise JobCancelled("cancelled during factor collection")
        if need_sums:
            sums, n = _source_sums(model, need_sums, src, i, reporter=reporter, cache=cache)
        else:
            sums, n = {}, 0
        per_source.append(sums)
        collected += n
    on_stage("collect_factors", collected == 0)
    if collected == 0:
        reporter.event(
            "info",
            f"K-FAC factors of all {len(sources)} calibration sources served from the factor cache",
            {"kind": "cache", "sources": len(sources)},
        )
    on_stage("eigendecompose", not missing_eig)
    dtype = torch.float64 if sources[0].eig_dtype == "float64" else torch.float32
    counts: dict[FactorId, int] = {}
    for fid in missing_eig:
        if reporter.cancelled():
            raise JobCancelled("cancelled during eigendecomposition")
        dev = _device_of(targets, model, fid)
        mean = None
        total = 0
        for sums, w in zip(per_source, weights, strict=True):
            mat, count = sums[fid]
            part = mat.to(device=dev, dtype=torch.float64) * (w / max(count, 1))
            mean = part if mean is None else mean + part
            total += count
        assert mean is not None
        e = eigendecompose(mean, 1, dtype, device=dev)
        eig[fid], counts[fid] = e, total
        if cache is not None:
            entry = {"values": e.values, "vectors": e.vectors, "count": torch.tensor(total, dtype=torch.int64)}
            cache.put(union_key(sources, weights, fid), entry)
    n_sums = len(fids) * len(sources) if missing_eig else 0
    stats = {
        "collect_factors": {"hits": n_sums - collected, "misses": collected},
        "eigendecompose": {"hits": len(fids) - len(missing_eig), "misses": len(missing_eig)},
    }
    keys = {f"{k}:{m}": union_key(sources, weights, (k, m)).digest for k, m in fids}
    factor_stats = report_factor_stats(fids, eig, counts, reporter)
    return CurvatureResult(
        eigens=eigens_on_devices(model, targets, eig),
        collect_cached=collected == 0,
        eigen_cached=not missing_eig,
        cache=stats,
        tokens=factor_stats["tokens"],  # positions over all sources (known from the counts, cached or not)
        keys=keys,
        factor_stats=factor_stats,
    )


def union_corrections(
    model: Any,
    targets: list[EditTarget],
    sources: list[CurvatureInputs],
    weights: list[float],
    eigens: dict[str, tuple[Eigen, Eigen]],
    *,
    reporter: Reporter,
    cache: FactorCache | None,
) -> Corrections:
    """EK-FAC ``s = Σ_k w_k s_k`` with each source's ``s_k`` measured in the union's eigenbases."""
    scores: dict[str, torch.Tensor] = {}
    hits = misses = 0
    keys: dict[str, str] = {}
    for i, (src, w) in enumerate(zip(sources, weights, strict=True)):

        def key_for(inputs: CurvatureInputs, t: EditTarget) -> CacheKey:
            args: dict[str, Any] = {
                **inputs.sum_args("G"),
                "estimator": "ekfac",
                "eigenbasis": {
                    "A": union_key(sources, weights, ("A", t.input_key)).digest,
                    "G": union_key(sources, weights, ("G", t.name)).digest,
                },
            }
            return CacheKey(kind="S", module=t.name, args=args, model=inputs.model_label)

        corr = compute_corrections(model, targets, src, eigens, reporter=reporter, cache=cache, key_for=key_for)
        for name, s in corr.scores.items():
            scores[name] = w * s if name not in scores else scores[name] + w * s
        hits += corr.cache["hits"]
        misses += corr.cache["misses"]
        keys.update({f"{k}@{i}": d for k, d in corr.keys.items()})
    return Corrections(scores=scores, cache={"hits": hits, "misses": misses}, keys=keys)
