"""The cache-aware middle of the pipeline: K-FAC sums and eigenbases for every target.

Per factor (``A`` per shared input key, ``G`` per module) the eigenbasis is looked up first; only
factors whose eigenbasis is missing need their sums, and only sums missing from the cache are
collected — in one pass over the calibration stream for exactly the targets that need it. New
sums and eigenbases are written back. A job on the same model and corpus with another
``keep_mass`` therefore skips both ``collect_factors`` and ``eigendecompose``.

Summation rule (exact: one run, any batch size and any sharding give bit-identical sums on CPU):
the calibration stream of ``n`` rows (packed sequences or images) is cut into units of
``ROWS_PER_UNIT`` rows and ``SUM_SEGMENTS`` segments of whole units (``contract.summation``). A
unit adds to its factor with one product over its positions in row order; a segment's sum starts
from zero and adds its units in order; the total is the first non-empty segment's sum plus the
following non-empty ones, in segment order (``workers.curvature.factors``). The unsharded pass
(``collect_sums``) does exactly that.

With ``settings.collect_shards = k > 1`` (at most ``SUM_SEGMENTS``) shard ``i`` is a contiguous
run of whole segments (``shard_rows``). A shard stores each of its segments' sums as a cache
entry of its own as soon as the segment is complete (``segment_key``: the segment index, not the
shard, is in the key, so the entries serve any shard count); shards missing from the cache are
offered to other workers through a ``ShardFanout`` (RQ jobs, see ``workers.shards``) and the job
itself collects every shard nobody has started yet, so it finishes even with no other worker.
The reduce then adds ALL segment sums in segment order -- never in completion order -- and caches
the total. A segment whose entry is gone by then (evicted) is recollected with its shard.
When every shard left is running on another worker, a fan-out that ``defers`` (the RQ one) makes
the job raise ``AwaitShards`` instead of waiting: the job gives its worker back and runs again as
a continuation once those shards finish (``workers.rq_job``), finding every shard in the cache.
An in-process fan-out (no ``defers``) polls every 0.25 s as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from contract.settings import Settings
from contract.spec import EditJobSpec
from contract.summation import SUM_ORDER, SUM_SEGMENTS, shard_segments, shard_span
from workers.cache import CacheKey, FactorCache
from workers.cache.keys import EntryKind
from workers.curvature import EditTarget, Eigen, collect_factors, eigendecompose, pack_texts
from workers.curvature.factor_stats import MIN_TOKENS_PER_DIM, factor_statistics, few_tokens
from workers.curvature.factors import KFACFactors, collect_segment_factors
from workers.pipeline.errors import PipelineError
from workers.pipeline.fingerprint import combine, digest_memo_path, fingerprint_model_dir, fingerprint_texts
from workers.pipeline.image_rows import CalibrationRows, ImageRows, calibration_batches
from workers.pipeline.loading import LoadedModel
from workers.pipeline.reporting import JobCancelled, Reporter, Stage
from workers.shards import AwaitShards

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
    shards: int = 1
    samples: int = 1
    precision: str = "fp32"
    logits_chunk: int = 1024
    images: ImageRows | None = None  # an image classifier's calibration images (then texts is empty)

    def sum_args(self, kind: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model_fingerprint": self.model_fingerprint,
            "model_dtype": self.model_dtype,
            "corpus_fingerprint": self.corpus_fingerprint,
            "max_tokens": self.max_tokens,
            "seq_len": self.seq_len,
            "accumulator_dtype": "float32",
            "precision": self.precision,
            "sum_order": SUM_ORDER,  # the fixed summation tree (contract.summation)
        }
        if kind == "G":  # A is a forward-only statistic: the label distribution does not touch it
            args.update(fisher=self.fisher, seed=self.seed)
            if self.fisher == "sampled":  # counter-keyed labels: batch size and shards do not matter
                args.update(labels="counter-v1", samples=self.samples)
        return args

    def segment_key(self, fid: FactorId, segment: int) -> CacheKey:
        """The sums of one summation segment (what shards store; independent of the shard count)."""
        base = self.key(fid, eig=False)
        args = {**base.args, "segment": segment, "segments": SUM_SEGMENTS}
        return CacheKey(kind=base.kind, module=base.module, args=args, model=base.model)

    def key(self, fid: FactorId, eig: bool) -> CacheKey:
        kind, module = fid
        args = self.sum_args(kind)
        entry: EntryKind = ("A_eig" if eig else "A") if kind == "A" else ("G_eig" if eig else "G")
        if eig:
            args = {**args, "eig_dtype": self.eig_dtype}
        return CacheKey(kind=entry, module=module, args=args, model=self.model_label)


def curvature_inputs(
    spec: EditJobSpec,
    settings: Settings,
    loaded: LoadedModel,
    texts: list[str],
    images: tuple[ImageRows, str] | None = None,
) -> CurvatureInputs:
    """The cache-key inputs of a job (fingerprints of the model directory and the corpus).

    ``images`` (an image classifier's calibration images and their fingerprint) replace ``texts``."""
    return CurvatureInputs(
        model_label=loaded.label,
        model_fingerprint=combine(fingerprint_model_dir(loaded.model_dir, digest_memo_path(settings.state_dir))),
        model_dtype=str(loaded.dtype).removeprefix("torch."),
        corpus_fingerprint=fingerprint_texts(texts) if images is None else images[1],
        texts=texts,
        images=None if images is None else images[0],
        tokenizer=loaded.tokenizer,
        max_tokens=spec.calibration.max_tokens,
        seq_len=spec.calibration.seq_len,
        batch_size=spec.calibration.batch_size,
        fisher=spec.curvature.fisher,
        seed=spec.curvature.seed,
        eig_dtype=spec.curvature.eig_dtype,
        shards=settings.collect_shards,
        samples=spec.curvature.samples,
        precision=spec.curvature.precision,
        logits_chunk=spec.curvature.logits_chunk,
    )


@dataclass
class CurvatureResult:
    eigens: dict[str, tuple[Eigen, Eigen]]
    collect_cached: bool
    eigen_cached: bool
    cache: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens: int | None = None
    keys: dict[str, str] = field(default_factory=dict)
    factor_stats: dict[str, Any] = field(default_factory=dict)


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


class ShardFanout(Protocol):
    """Runs shards elsewhere (``workers.shards.RQShardFanout``). Handles are opaque strings."""

    def submit(self, shard: int, shards: int, targets: list[str]) -> str:
        """Offer one shard to other workers; returns a handle."""

    def state(self, handle: str) -> str:
        """``pending`` (nobody started it), ``running``, ``done`` or ``failed``."""

    def steal(self, handle: str) -> bool:
        """Take back a shard nobody started; True when the caller must now collect it itself."""


def pack_calibration(inputs: CurvatureInputs) -> CalibrationRows:
    """The calibration rows: packed token sequences, or the images of an image classifier."""
    if inputs.images is not None:
        return inputs.images
    try:
        return pack_texts(inputs.tokenizer, inputs.texts, inputs.seq_len, inputs.max_tokens)
    except ValueError as exc:
        raise PipelineError("invalid_dataset", f"calibration: {exc}") from exc


def shard_rows(n_seq: int, shards: int, shard: int) -> slice:
    """Rows of the calibration stream that belong to ``shard``: its whole summation segments."""
    start, stop = shard_span(n_seq, shards, shard)
    return slice(start, stop)


Sums = dict[FactorId, tuple[torch.Tensor, int]]


def _by_factor(targets: list[EditTarget], factors: dict[str, KFACFactors]) -> Sums:
    out: Sums = {}
    for t in targets:
        f = factors[t.name]
        out.setdefault(("A", t.input_key), (f.A_sum, int(f.count)))
        out[("G", t.name)] = (f.G_sum, int(f.count))
    return out


def _collect_args(inputs: CurvatureInputs) -> dict[str, Any]:
    return {
        "fisher": inputs.fisher,
        "seed": inputs.seed,
        "samples": inputs.samples,
        "precision": inputs.precision,
        "logits_chunk": inputs.logits_chunk,
    }


def _zeros(targets: list[EditTarget]) -> Sums:
    out: Sums = {}
    for t in targets:
        out.setdefault(("A", t.input_key), (torch.zeros(t.in_features, t.in_features), 0))
        out[("G", t.name)] = (torch.zeros(t.out_features, t.out_features), 0)
    return out


def collect_sums(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    ids: CalibrationRows,
    *,
    progress: Callable[[int, int | None], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> Sums:
    """K-FAC sums of ``targets`` over the whole calibration stream ``ids`` (one pass), keyed by
    factor id, added by the summation rule (the stream's segments, in order)."""
    if ids.shape[0] == 0:
        return _zeros(targets)
    factors = collect_factors(
        model,
        calibration_batches(ids, inputs.batch_size),
        targets,
        **_collect_args(inputs),
        stream_rows=int(ids.shape[0]),
        total_tokens=int(ids.numel()),
        progress=progress,
        should_cancel=should_cancel,
    )
    return _by_factor(targets, factors)


def _entry(mat: torch.Tensor, count: int) -> dict[str, torch.Tensor]:
    return {"sum": mat, "count": torch.tensor(int(count), dtype=torch.int64)}


def store_segment(cache: FactorCache, inputs: CurvatureInputs, segment: int, sums: Sums) -> bool:
    """Store one segment's sums (a segment without positions as count 0 and an empty sum);
    False when the cache did not take every entry."""
    ok = True
    for fid, (mat, count) in sums.items():
        ok = cache.put(inputs.segment_key(fid, segment), _entry(mat if count else torch.zeros(0), count)) and ok
    return ok


def collect_shard(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    ids: CalibrationRows,
    shard: int,
    *,
    cache: FactorCache,
    should_cancel: Callable[[], bool] | None,
) -> dict[int, Sums]:
    """Collect shard ``shard`` of ``inputs.shards`` of the calibration stream ``ids`` (all of its
    rows), storing each of the shard's segments in the cache as soon as it is complete (one
    segment accumulator per factor). Returns the segments the cache did not take (kept here)."""
    span = shard_rows(int(ids.shape[0]), inputs.shards, shard)
    kept: dict[int, Sums] = {}
    seen: set[int] = set()

    def sink(segment: int, factors: dict[str, KFACFactors]) -> None:
        part = _by_factor(targets, factors)
        seen.add(segment)
        if not store_segment(cache, inputs, segment, part):
            kept[segment] = {fid: (mat.clone(), count) for fid, (mat, count) in part.items()}

    if span.stop > span.start:
        collect_segment_factors(
            model,
            calibration_batches(ids[span], inputs.batch_size),
            targets,
            **_collect_args(inputs),
            stream_rows=int(ids.shape[0]),
            first_sequence=span.start,  # units, segments and sampled labels go by the stream row
            on_segment=sink,
            should_cancel=should_cancel,
        )
    empty: Sums = {fid: (torch.zeros(0), 0) for fid in _zeros(targets)}
    for segment in shard_segments(inputs.shards, shard):
        if segment not in seen and not store_segment(cache, inputs, segment, empty):
            kept[segment] = empty
    return kept


def _collect_sharded(
    model: Any,
    targets: list[EditTarget],
    need: list[FactorId],
    inputs: CurvatureInputs,
    ids: CalibrationRows,
    *,
    cache: FactorCache,
    fanout: ShardFanout | None,
    reporter: Reporter,
) -> Sums:
    """Sums over all shards (cached shards, shards other workers collect, and the rest here),
    reduced segment by segment in segment order."""
    k = inputs.shards
    n_seq = int(ids.shape[0])
    done: set[int] = set()
    kept: dict[int, dict[int, Sums]] = {}  # shard -> its segments the cache did not take

    def mark(shard: int) -> None:
        done.add(shard)
        rows = sum(shard_rows(n_seq, k, i).stop - shard_rows(n_seq, k, i).start for i in done)
        total = int(ids.numel())
        reporter.progress(len(done) / k, tokens_done=rows * int(ids.shape[1]), tokens_total=total)

    def stored() -> set[str]:
        return {str(e.get("key")) for e in cache.entries()}

    def cached(shard: int, have: set[str]) -> bool:
        keys = (inputs.segment_key(fid, s) for s in shard_segments(k, shard) for fid in need)
        return all(key.digest in have for key in keys)

    def collect_here(shard: int) -> None:
        kept[shard] = collect_shard(model, targets, inputs, ids, shard, cache=cache, should_cancel=reporter.cancelled)
        mark(shard)

    have = stored()
    for shard in range(k):
        if cached(shard, have):
            mark(shard)
    names = [t.name for t in targets]
    handles = {s: fanout.submit(s, k, names) for s in range(k) if s not in done} if fanout else {}
    reporter.event(
        "info",
        f"factor collection in {k} shards: {len(done)} cached, {len(handles)} offered to other workers",
        {"kind": "shards", "shards": k, "cached": sorted(done), "offered": sorted(handles)},
    )
    while len(done) < k:
        if reporter.cancelled():
            raise JobCancelled("cancelled during sharded factor collection")
        progressed = False
        for shard in sorted(set(range(k)) - done, reverse=True):  # steal from the back of the queue
            handle = handles.get(shard)
            if handle is None:
                collect_here(shard)
                progressed = True
                break
            state = fanout.state(handle) if fanout else "failed"
            if state == "done":
                if cached(shard, stored()):
                    mark(shard)
                else:
                    collect_here(shard)
                progressed = True
            elif state == "failed" or (state == "pending" and fanout is not None and fanout.steal(handle)):
                collect_here(shard)
                progressed = True
                break
        if not progressed:
            if fanout is not None and getattr(fanout, "defers", False):
                running = [handles[s] for s in sorted(set(range(k)) - done)]
                raise AwaitShards(running, len(done), k)  # every shard here is stored in the cache
            time.sleep(0.25)
    return _reduce_segments(model, targets, need, inputs, ids, cache=cache, kept=kept, reporter=reporter)


def _reduce_segments(
    model: Any,
    targets: list[EditTarget],
    need: list[FactorId],
    inputs: CurvatureInputs,
    ids: CalibrationRows,
    *,
    cache: FactorCache,
    kept: dict[int, dict[int, Sums]],
    reporter: Reporter,
) -> Sums:
    """Add every segment's sums in segment order: the first non-empty one is the start and
    segments without positions are skipped -- the additions of the unsharded pass, so its bits."""
    acc: Sums = {}
    for shard in range(inputs.shards):
        for segment in shard_segments(inputs.shards, shard):
            for fid in need:
                part = kept.get(shard, {}).get(segment)
                got = None if part is not None else cache.get(inputs.segment_key(fid, segment))
                if part is None and got is None:  # evicted since it was stored: recollect, keep here
                    reporter.event(
                        "warning",
                        f"factor shard {shard + 1}/{inputs.shards} left the cache before the reduce; recollecting it",
                        {"kind": "shard_recollect", "shard": shard, "shards": inputs.shards},
                    )
                    kept[shard] = collect_shard(
                        model, targets, inputs, ids, shard, cache=_NoCache(), should_cancel=reporter.cancelled
                    )
                    part = kept[shard][segment]
                if part is not None:
                    mat, count = part[fid]
                else:
                    assert got is not None
                    mat, count = got["sum"], int(got["count"])
                if count == 0:
                    continue
                if fid in acc:
                    prev, n = acc[fid]
                    acc[fid] = (prev.add_(mat.to(prev.device)), n + count)
                else:
                    acc[fid] = (mat.clone(), count)
    zeros = _zeros(targets)
    for fid in need:
        acc.setdefault(fid, zeros[fid])
    return acc


class _NoCache:
    """A ``FactorCache`` that takes nothing (a recollected shard's segments stay in memory)."""

    def get(self, key: CacheKey) -> dict[str, torch.Tensor] | None:
        return None

    def put(self, key: CacheKey, tensors: dict[str, torch.Tensor]) -> bool:
        return False

    def entries(self) -> list[dict[str, Any]]:
        return []

    def delete(self, digest: str) -> bool:
        return False


def report_factor_stats(
    fids: list[FactorId], eig: dict[FactorId, Eigen], counts: dict[FactorId, int], reporter: Reporter
) -> dict[str, Any]:
    """Per-factor statistics (event ``factor_stats``), and a warning when the calibration is small.

    Returns the manifest's ``factor_stats``: ``{"tokens", "largest_dim", "min_tokens_per_dim",
    "few_tokens", "factors": {"A:<input key>" | "G:<module>": statistics}}``."""
    factors = {f"{k}:{m}": factor_statistics(eig[(k, m)].values, counts.get((k, m))) for k, m in fids}
    known = list(counts.values())
    tokens = min(known) if known else None
    largest = max(s["dim"] for s in factors.values())
    flagged = tokens is not None and few_tokens(tokens, largest)
    out = {
        "tokens": tokens,
        "largest_dim": largest,
        "min_tokens_per_dim": MIN_TOKENS_PER_DIM,
        "few_tokens": flagged,
        "factors": factors,
    }
    reporter.event(
        "info",
        f"factor statistics: {tokens if tokens is not None else 'unknown'} tokens, largest dimension {largest}",
        {"kind": "factor_stats", **out},
    )
    if flagged:
        short = sorted(
            name
            for name, s in factors.items()
            if s["tokens_per_dim"] is not None and s["tokens_per_dim"] < MIN_TOKENS_PER_DIM
        )
        reporter.event(
            "warning",
            f"calibration has {tokens} tokens, fewer than {MIN_TOKENS_PER_DIM} x the largest edited dimension "
            f"({largest}): the factors are rank-deficient or noisy and their null space is removed at any "
            f"keep_mass < 1; raise calibration.max_tokens to at least {MIN_TOKENS_PER_DIM * largest}",
            {"kind": "few_tokens", "tokens": tokens, "largest_dim": largest, "factors": short},
        )
    return out


def compute_curvature(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    *,
    reporter: Reporter,
    cache: FactorCache | None,
    on_stage: Callable[[Stage, bool], None],
    fanout: ShardFanout | None = None,
) -> CurvatureResult:
    """Eigenbases ``{target name: (G-eigen, A-eigen)}``, from the cache where possible.

    ``on_stage(name, cached)`` is called when ``collect_factors`` and ``eigendecompose`` start."""
    fids = _factor_ids(targets)
    eig, counts, sums = _cached_entries(fids, inputs, cache)
    need = [fid for fid in fids if fid not in eig and fid not in sums]
    need_targets = [t for t in targets if ("A", t.input_key) in need or ("G", t.name) in need]
    stats = {
        "collect_factors": {"hits": len(fids) - len(need), "misses": len(need)},
        "eigendecompose": {"hits": len(eig), "misses": len(fids) - len(eig)},
    }

    on_stage("collect_factors", not need_targets)
    tokens = None
    if need_targets:
        collected, tokens = _collect_missing(model, need_targets, need, inputs, cache, fanout, reporter)
        sums.update(collected)
    else:
        reporter.event("info", "K-FAC factors served from the factor cache", {"kind": "cache", **stats})

    missing_eig = [fid for fid in fids if fid not in eig]
    on_stage("eigendecompose", not missing_eig)
    for i, fid in enumerate(missing_eig):
        if reporter.cancelled():
            raise JobCancelled("cancelled during eigendecomposition")
        eig[fid], counts[fid] = _eigendecompose_sum(model, targets, inputs, cache, fid, *sums[fid])
        reporter.progress((i + 1) / len(missing_eig))

    return CurvatureResult(
        eigens=eigens_on_devices(model, targets, eig),
        collect_cached=not need_targets,
        eigen_cached=not missing_eig,
        cache=stats,
        tokens=tokens,
        keys={f"{k}:{m}": inputs.key((k, m), eig=True).digest for k, m in fids},
        factor_stats=report_factor_stats(fids, eig, counts, reporter),
    )


def _cached_entries(
    fids: list[FactorId], inputs: CurvatureInputs, cache: FactorCache | None
) -> tuple[dict[FactorId, Eigen], dict[FactorId, int], Sums]:
    """What the cache already holds: eigenbases (and their position counts), and the sums of the
    factors whose eigenbasis is missing."""
    eig: dict[FactorId, Eigen] = {}
    counts: dict[FactorId, int] = {}
    sums: Sums = {}
    if cache is None:
        return eig, counts, sums
    for fid in fids:
        got = cache.get(inputs.key(fid, eig=True))
        if got is not None:
            eig[fid] = Eigen(got["values"], got["vectors"])
            if "count" in got:  # entries written before the count was stored lack it
                counts[fid] = int(got["count"])
    for fid in fids:
        if fid not in eig and (got := cache.get(inputs.key(fid, eig=False))) is not None:
            sums[fid] = (got["sum"], int(got["count"]))
    return eig, counts, sums


def _collect_missing(
    model: Any,
    need_targets: list[EditTarget],
    need: list[FactorId],
    inputs: CurvatureInputs,
    cache: FactorCache | None,
    fanout: ShardFanout | None,
    reporter: Reporter,
) -> tuple[Sums, int]:
    """One pass (or the shards) over the calibration rows for the factors ``need``; written to the
    cache. Returns the sums and the stream's token count."""
    ids = pack_calibration(inputs)
    tokens = int(ids.numel())
    reporter.event(
        "info",
        f"collecting K-FAC factors for {len(need_targets)} target(s) over {tokens} tokens",
        {"kind": "collect", "targets": [t.name for t in need_targets], "tokens": tokens},
    )

    def progress(done: int, total: int | None) -> None:
        reporter.progress(done / total if total else 0.0, tokens_done=done, tokens_total=total)

    if inputs.shards > 1 and cache is not None:
        collected = _collect_sharded(
            model, need_targets, need, inputs, ids, cache=cache, fanout=fanout, reporter=reporter
        )
    else:
        collected = collect_sums(model, need_targets, inputs, ids, progress=progress, should_cancel=reporter.cancelled)
    reporter.progress(1.0, tokens_done=tokens, tokens_total=tokens)  # the final, never rate-limited update
    out = {fid: collected[fid] for fid in need}
    if cache is not None:
        for fid, entry in out.items():
            cache.put(inputs.key(fid, eig=False), _entry(*entry))
    return out, tokens


def _eigendecompose_sum(
    model: Any,
    targets: list[EditTarget],
    inputs: CurvatureInputs,
    cache: FactorCache | None,
    fid: FactorId,
    mat: torch.Tensor,
    count: int,
) -> tuple[Eigen, int]:
    """The eigenbasis of one factor's mean (on its weight's device), written to the cache."""
    dtype = torch.float64 if inputs.eig_dtype == "float64" else torch.float32
    e = eigendecompose(mat, count, dtype, device=_device_of(targets, model, fid))
    if cache is not None:
        entry = {"values": e.values, "vectors": e.vectors, "count": torch.tensor(int(count), dtype=torch.int64)}
        cache.put(inputs.key(fid, eig=True), entry)
    return e, count


def eigens_on_devices(
    model: Any, targets: list[EditTarget], eig: dict[FactorId, Eigen]
) -> dict[str, tuple[Eigen, Eigen]]:
    """``{target name: (G-eigen, A-eigen)}``, each on its target weight's device."""
    out: dict[str, tuple[Eigen, Eigen]] = {}
    for t in targets:
        dev = _weight_device(model, t)
        out[t.name] = (eig[("G", t.name)].to(device=dev), eig[("A", t.input_key)].to(device=dev))
    return out
