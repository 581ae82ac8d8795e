"""The cache-aware middle of the pipeline: K-FAC sums and eigenbases for every target.

Per factor (``A`` per shared input key, ``G`` per module) the eigenbasis is looked up first; only
factors whose eigenbasis is missing need their sums, and only sums missing from the cache are
collected — in one pass over the calibration stream for exactly the targets that need it. New
sums and eigenbases are written back. A job on the same model and corpus with another
``keep_mass`` therefore skips both ``collect_factors`` and ``eigendecompose``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.cache import CacheKey, FactorCache
from workers.cache.keys import EntryKind
from workers.curvature import EditTarget, Eigen, collect_factors, eigendecompose, iter_batches, pack_texts
from workers.pipeline.errors import PipelineError
from workers.pipeline.reporting import JobCancelled, Reporter, Stage

log = logging.getLogger(__name__)

FactorId = tuple[str, str]  # ("A", input_key) or ("G", module name)


@dataclass
class CurvatureInputs:
    """What determines the factors (everything that goes into the cache key)."""

    model_label: str
    model_fingerprint: str
    model_dtype: str
    corpus_fingerprint: str
    texts: list[str]
    tokenizer: Any
    max_tokens: int
    seq_len: int
    batch_size: int
    fisher: str
    seed: int
    eig_dtype: str

    def sum_args(self, kind: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model_fingerprint": self.model_fingerprint,
            "model_dtype": self.model_dtype,
            "corpus_fingerprint": self.corpus_fingerprint,
            "max_tokens": self.max_tokens,
            "seq_len": self.seq_len,
            "accumulator_dtype": "float32",
        }
        if kind == "G":  # A is a forward-only statistic: the label distribution does not touch it
            args.update(fisher=self.fisher, seed=self.seed)
        return args

    def key(self, fid: FactorId, eig: bool) -> CacheKey:
        kind, module = fid
        args = self.sum_args(kind)
        entry: EntryKind = ("A_eig" if eig else "A") if kind == "A" else ("G_eig" if eig else "G")
        if eig:
            args = {**args, "eig_dtype": self.eig_dtype}
        return CacheKey(kind=entry, module=module, args=args, model=self.model_label)


@dataclass
class CurvatureResult:
    eigens: dict[str, tuple[Eigen, Eigen]]
    collect_cached: bool
    eigen_cached: bool
    cache: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens: int | None = None
    keys: dict[str, str] = field(default_factory=dict)


def _factor_ids(targets: list[EditTarget]) -> list[FactorId]:
    ids: list[FactorId] = []
    for t in targets:
        for fid in (("A", t.input_key), ("G", t.name)):
            if fid not in ids:
                ids.append(fid)
    return ids


def _device_of(targets: list[EditTarget], model: Any, fid: FactorId) -> torch.device:
    for t in targets:
        if (fid[0] == "A" and t.input_key == fid[1]) or (fid[0] == "G" and t.name == fid[1]):
            return _weight_device(model, t)
    raise KeyError(fid)


def _weight_device(model: Any, target: EditTarget) -> torch.device:
    weight = target.module(model).weight
    assert isinstance(weight, torch.Tensor)
    return weight.device


def compute_curvature(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    *,
    reporter: Reporter,
    cache: FactorCache | None,
    on_stage: Callable[[Stage, bool], None],
) -> CurvatureResult:
    """Eigenbases ``{target name: (G-eigen, A-eigen)}``, from the cache where possible.

    ``on_stage(name, cached)`` is called when ``collect_factors`` and ``eigendecompose`` start."""
    fids = _factor_ids(targets)
    eig: dict[FactorId, Eigen] = {}
    sums: dict[FactorId, tuple[torch.Tensor, int]] = {}
    if cache is not None:
        for fid in fids:
            got = cache.get(inputs.key(fid, eig=True))
            if got is not None:
                eig[fid] = Eigen(got["values"], got["vectors"])
        for fid in fids:
            if fid in eig:
                continue
            got = cache.get(inputs.key(fid, eig=False))
            if got is not None:
                sums[fid] = (got["sum"], int(got["count"]))
    need = [fid for fid in fids if fid not in eig and fid not in sums]
    need_targets = [t for t in targets if ("A", t.input_key) in need or ("G", t.name) in need]
    stats = {
        "collect_factors": {"hits": len(fids) - len(need), "misses": len(need)},
        "eigendecompose": {"hits": len(eig), "misses": len(fids) - len(eig)},
    }

    on_stage("collect_factors", not need_targets)
    tokens = None
    if need_targets:
        try:
            ids = pack_texts(inputs.tokenizer, inputs.texts, inputs.seq_len, inputs.max_tokens)
        except ValueError as exc:
            raise PipelineError("invalid_dataset", f"calibration: {exc}") from exc
        tokens = int(ids.numel())
        reporter.event(
            "info",
            f"collecting K-FAC factors for {len(need_targets)} target(s) over {tokens} tokens",
            {"kind": "collect", "targets": [t.name for t in need_targets], "tokens": tokens},
        )

        def progress(done: int, total: int | None) -> None:
            reporter.progress(done / total if total else 0.0, tokens_done=done, tokens_total=total)

        factors = collect_factors(
            model,
            iter_batches(ids, inputs.batch_size),
            need_targets,
            inputs.fisher,  # type: ignore[arg-type]
            seed=inputs.seed,
            total_tokens=tokens,
            progress=progress,
            should_cancel=reporter.cancelled,
        )
        for t in need_targets:
            f = factors[t.name]
            for fid, mat in ((("A", t.input_key), f.A_sum), (("G", t.name), f.G_sum)):
                if fid in need and fid not in sums:
                    sums[fid] = (mat, int(f.count))
                    if cache is not None:
                        cache.put(
                            inputs.key(fid, eig=False),
                            {"sum": mat, "count": torch.tensor(int(f.count), dtype=torch.int64)},
                        )
    else:
        reporter.event("info", "K-FAC factors served from the factor cache", {"kind": "cache", **stats})

    missing_eig = [fid for fid in fids if fid not in eig]
    on_stage("eigendecompose", not missing_eig)
    dtype = torch.float64 if inputs.eig_dtype == "float64" else torch.float32
    for i, fid in enumerate(missing_eig):
        if reporter.cancelled():
            raise JobCancelled("cancelled during eigendecomposition")
        mat, count = sums[fid]
        e = eigendecompose(mat, count, dtype, device=_device_of(targets, model, fid))
        eig[fid] = e
        if cache is not None:
            cache.put(inputs.key(fid, eig=True), {"values": e.values, "vectors": e.vectors})
        reporter.progress((i + 1) / len(missing_eig))

    eigens: dict[str, tuple[Eigen, Eigen]] = {}
    for t in targets:
        dev = _weight_device(model, t)
        eigens[t.name] = (eig[("G", t.name)].to(device=dev), eig[("A", t.input_key)].to(device=dev))
    keys = {f"{k}:{m}": inputs.key((k, m), eig=True).digest for k, m in fids}
    return CurvatureResult(
        eigens=eigens,
        collect_cached=not need_targets,
        eigen_cached=not missing_eig,
        cache=stats,
        tokens=tokens,
        keys=keys,
    )
