"""K-FAC factor collection: input and output-gradient second moments of the edited layers.

For every target ``W`` (out x in) and every valid token position ``t``:

* ``a_t`` is the layer input (``in``), ``A_sum = sum_t a_t a_t^T``;
* ``g_t`` is the gradient of the sequence's loss w.r.t. the layer output at ``t`` (``out``),
  ``G_sum = sum_t g_t g_t^T``.

Loss convention: the loss of a batch is the SUM over its valid positions of the token log-loss
``-log p(y_t | x_<=t)`` (no mean), so ``g_t = d(sum_s loss_s) / d out_t`` -- the usual K-FAC
per-token gradient (through causal attention it collects the losses at positions >= t of the
same sequence). Labels ``y_t``: ``fisher="sampled"`` draws them from the model's own
``softmax(logits_t)`` (true Fisher) by inverse CDF with a counter-based uniform keyed by
``(seed, sequence index, position, sample)`` (``workers.curvature.labels``): the sequence index
is the row of the packed calibration stream (``first_sequence`` + rows fed so far), so the labels
do not depend on batching or sharding. ``samples = S > 1`` draws S labels per position from one
shared forward pass and averages their contributions: ``G_sum = sum_t (1/S) sum_s g_ts g_ts^T``.
``fisher="empirical"`` uses the corpus's next token (one "sample").

Chunked logits: when the model splits into body + output head (``workers.curvature.heads``),
the body runs once per batch and ``head(hidden)`` runs over one sequence's valid positions at a
time (at most ``logits_chunk`` of them) -- the label sampling, the loss and its gradient w.r.t.
those hidden states are done chunk by chunk -- and one backward from the hidden states (with the
stacked hidden-state gradients) gives the ``g_t``. So no (positions x vocabulary) tensor exists
beyond one chunk. Models that do not split take the logits from the full forward (same arithmetic,
one big logits tensor).

Valid positions: ``attention_mask[t] == 1`` and ``attention_mask[t + 1] == 1`` (so the last
position of each row, which has no next-token target, and padding are excluded). ``count`` is
the number of valid positions; sums are float32 whatever the model dtype, so shards add.
``precision`` (``fp32`` | ``tf32`` | ``bf16``) sets the precision of the accumulation's matrix
product inputs (``workers.curvature.precision``); the accumulators stay float32.

Exact summation rule (``contract.summation``), so a single run, any batch size and any sharding
give bit-identical sums on CPU (on a GPU the per-row activations themselves may differ):

* rows are the stream's sequences (or images), ``first_sequence + i`` for the i-th row fed;
  unit ``u`` is rows ``[8u, 8u + 8)`` (``ROWS_PER_UNIT``). The hooks stash a batch's rows; a unit
  is added with ONE product ``acc += X^T X`` over a fresh copy of all its positions in row order
  (for ``G`` with S samples: sample-major, weight ``1/S``) once its rows are in -- a batch whose
  size is a multiple of 8 buffers nothing, other batch sizes keep up to one open unit;
* the stream's units form ``SUM_SEGMENTS`` contiguous segments (boundaries from ``stream_rows``);
  each segment accumulates from zero in its own accumulator and, when complete, is handed to
  ``on_segment`` (``collect_segment_factors``, for shards) or added to the total: the total is
  the first non-empty segment's sum, then ``+=`` each later non-empty segment, in order. Memory:
  one segment accumulator per factor beside the total;
* the per-row activations and gradients must not depend on the batch either: the body's do not
  on CPU, but a matrix product's per-row result can depend on its number of rows, so the head
  runs sequence by sequence (below). The body's products run over batch x seq_len rows, and
  their per-row results were measured identical for 2 or more rows but not for a lone row (a
  different small-matrix kernel), so a 1-row batch runs as two rows: the row and a copy whose
  positions are all dropped (twice the compute for that batch only; configure
  ``calibration.batch_size >= 2``). One more condition: every batch must take the same attention
  path. HF's SDPA attention drops the mask of a batch without padding (``is_causal`` kernel),
  whose last bits differ from the masked kernel's; packed calibration rows are never padded, so
  the pipeline is exact, while a caller mixing padded and unpadded batches gets the same sums to
  rounding only.

Cost: parameters are frozen during collection (no weight gradients), and the graph starts at
the earliest target's output (its output is made a fresh leaf because nothing upstream needs a
gradient), so nothing below the earliest edited layer runs backward. Targets with the same
``input_key`` (gate and up of one layer) share one ``A`` tensor. Each accumulator lives on its
module's weight device, so ``device_map`` models work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from contract.summation import ROWS_PER_UNIT, segment_bounds, segment_of_row
from workers.curvature.cancellation import JobCancelled
from workers.curvature.heads import split_body_and_head, split_classifier
from workers.curvature.labels import counter_uniforms, inverse_cdf
from workers.curvature.precision import PRECISIONS, Precision, accumulate_outer
from workers.curvature.targets import EditTarget, module_weight

Fisher = Literal["sampled", "empirical"]


@dataclass
class KFACFactors:
    """Mergeable K-FAC sums for one target: ``A_sum`` (in x in), ``G_sum`` (out x out), ``count``."""

    A_sum: torch.Tensor
    G_sum: torch.Tensor
    count: int

    def __post_init__(self) -> None:
        for label, m in (("A_sum", self.A_sum), ("G_sum", self.G_sum)):
            if m.dim() != 2 or m.shape[0] != m.shape[1]:
                raise ValueError(f"expected {label} square, got shape {tuple(m.shape)}")
        if self.count < 0:
            raise ValueError(f"expected count >= 0, got {self.count}")

    def __add__(self, other: KFACFactors) -> KFACFactors:
        if not isinstance(other, KFACFactors):
            return NotImplemented
        for label, a, b in (("A_sum", self.A_sum, other.A_sum), ("G_sum", self.G_sum, other.G_sum)):
            if a.shape != b.shape:
                raise ValueError(f"expected {label} of shape {tuple(a.shape)}, got {tuple(b.shape)}")
        return KFACFactors(
            A_sum=self.A_sum + other.A_sum.to(self.A_sum.device),
            G_sum=self.G_sum + other.G_sum.to(self.G_sum.device),
            count=self.count + other.count,
        )

    def A_mean(self) -> torch.Tensor:
        return self.A_sum / max(self.count, 1)

    def G_mean(self) -> torch.Tensor:
        return self.G_sum / max(self.count, 1)

    def to(self, device: torch.device | str) -> KFACFactors:
        return KFACFactors(self.A_sum.to(device), self.G_sum.to(device), self.count)


def merge_factors(parts: Iterable[Mapping[str, KFACFactors]]) -> dict[str, KFACFactors]:
    """Add shard results target by target; ``A`` tensors shared within a shard stay shared."""
    merged: dict[str, KFACFactors] = {}
    # id(A_sum in merged) -> (id(A_sum in part) ...) bookkeeping keeps shared A's shared.
    for part in parts:
        if merged and set(part) != set(merged):
            raise ValueError(f"expected shards over the same targets {sorted(merged)}, got {sorted(part)}")
        new_a: dict[int, torch.Tensor] = {}
        out: dict[str, KFACFactors] = {}
        for name, f in part.items():
            if name not in merged:
                a = new_a.setdefault(id(f.A_sum), f.A_sum.clone())
                out[name] = KFACFactors(a, f.G_sum.clone(), f.count)
                continue
            prev = merged[name]
            key = id(prev.A_sum)
            if key not in new_a:
                new_a[key] = prev.A_sum + f.A_sum.to(prev.A_sum.device)
            out[name] = KFACFactors(new_a[key], prev.G_sum + f.G_sum.to(prev.G_sum.device), prev.count + f.count)
        merged = out
    return merged


SegmentSink = Callable[[int, dict[str, "KFACFactors"]], None]
"""Receives (segment index, that segment's sums per target); the tensors are reused afterwards."""


def valid_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Bool (B, T): positions that are real tokens and have a real next token."""
    m = attention_mask.bool()
    valid = torch.zeros_like(m)
    valid[:, :-1] = m[:, :-1] & m[:, 1:]
    return valid


class _Collector:
    """Hooks and accumulators for one ``collect_factors`` call.

    The hooks stash a batch's valid input rows (``on_input``) and output-gradient rows
    (``on_output_grad``); ``finish_batch`` cuts them into units (``contract.summation``) and adds
    each complete unit to the segment accumulators ``A`` / ``G`` with one product; a finished
    segment goes to ``on_segment`` (if given) or is added to the totals."""

    def __init__(
        self,
        model: nn.Module,
        targets: list[EditTarget],
        precision: Precision,
        *,
        allocate: bool = True,
        stream_rows: int | None = None,
        on_segment: SegmentSink | None = None,
    ) -> None:
        self.targets = targets
        self.precision = precision
        self.A: dict[str, torch.Tensor] = {}  # the current segment's sums
        self.G: dict[str, torch.Tensor] = {}
        for t in targets if allocate else []:  # a subclass with other accumulators skips A and G
            dev = module_weight(t.module(model)).device
            if t.input_key not in self.A:
                self.A[t.input_key] = torch.zeros(t.in_features, t.in_features, dtype=torch.float32, device=dev)
            self.G[t.name] = torch.zeros(t.out_features, t.out_features, dtype=torch.float32, device=dev)
        self.total_A: dict[str, torch.Tensor] = {}  # sums of the finished segments (no sink)
        self.total_G: dict[str, torch.Tensor] = {}
        self.total_count = 0
        self.bounds = None if stream_rows is None else segment_bounds(stream_rows)
        self.on_segment = on_segment
        self.valid: torch.Tensor | None = None
        self.rows_seen = 0  # token rows of the current batch (image batches count them in the hooks)
        self._valid_on: dict[torch.device, torch.Tensor] = {}
        self._a_done: set[str] = set()
        self.outputs: list[tuple[str, torch.Tensor]] = []
        self._first_row = 0
        self._n_rows = 0
        self._valid_counts: list[int] | None = None  # valid positions per row of the batch
        self._a_batch: dict[str, torch.Tensor] = {}  # this batch's rows, per input key
        self._g_batch: dict[str, list[torch.Tensor]] = {}  # per target: (k N, out) per backward
        self._alpha = 1.0
        self._unit: int | None = None  # the unit being gathered and its pieces
        self._unit_a: dict[str, list[torch.Tensor]] = {}
        self._unit_g: dict[str, list[torch.Tensor]] = {}  # (S, n, out) pieces
        self._unit_count = 0
        self._segment: int | None = None  # the segment the accumulators hold
        self._segment_count = 0

    def start_batch(self, valid: torch.Tensor | None, *, first_row: int = 0, n_rows: int | None = None) -> None:
        """``valid`` (B, T) selects the token positions; ``None``: every position (image models,
        which pass ``n_rows``, the number of images). ``first_row``: the stream index of row 0;
        ``n_rows``: the stream rows in the batch (rows of ``valid`` beyond them have no position)."""
        if valid is None and n_rows is None:
            raise ValueError("expected n_rows (the batch's examples) when every position is valid")
        self.valid = valid
        self._valid_on = {} if valid is None else {valid.device: valid}
        self._a_done = set()
        self.outputs = []
        self.rows_seen = 0
        self._first_row = first_row
        self._n_rows = int(n_rows) if n_rows is not None else int(valid.shape[0]) if valid is not None else 0
        self._a_batch = {}
        self._g_batch = {}
        self._valid_counts = None

    def valid_on(self, device: torch.device) -> torch.Tensor:
        assert self.valid is not None
        if device not in self._valid_on:
            self._valid_on[device] = self.valid.to(device)
        return self._valid_on[device]

    def _rows(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if self.valid is None:  # every position of every example
            return x.reshape(-1, x.shape[-1]).float()
        mask = self.valid_on(x.device)
        if x.shape[:-1] != mask.shape:
            raise ValueError(
                f"expected {name} activations of shape {tuple(mask.shape)} + (features,), got {tuple(x.shape)}"
            )
        return x[mask].float()

    def hook(self, target: EditTarget) -> Callable[..., torch.Tensor | None]:
        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if target.input_key not in self._a_done:
                self._a_done.add(target.input_key)
                rows = self._rows(args[0].detach(), target.name)
                self.rows_seen = max(self.rows_seen, rows.shape[0])
                self.on_input(target, rows)
            replaced = None
            if not output.requires_grad:
                # Nothing upstream needs a gradient: start the graph here (cuts the backward).
                output = output.detach().requires_grad_(True)
                replaced = output
            self.outputs.append((target.name, output))
            return replaced

        return forward_hook

    def on_input(self, target: EditTarget, a: torch.Tensor) -> None:
        """The valid input rows (N, in) of ``target`` (once per input key and batch), row-major."""
        self._a_batch[target.input_key] = a

    def on_output_grad(self, name: str, g: torch.Tensor, alpha: float) -> None:
        """Output-gradient rows of target ``name``: (N, out), or (k N, out) sample-major for k
        batched samples; each sample's ``g g^T`` is weighted ``alpha``."""
        self._g_batch.setdefault(name, []).append(g)
        self._alpha = alpha

    def accumulate_g(self, root: torch.Tensor, grad_root: torch.Tensor, *, alpha: float, retain: bool) -> None:
        """Backward from ``root`` (seeded with ``grad_root``) to the targets' outputs; ``G += alpha g g^T``."""
        if not self.outputs:
            names = [t.name for t in self.targets]
            raise ValueError(f"none of the targets {names} ran in the model's forward pass")
        tensors = [t for _, t in self.outputs]
        grads = torch.autograd.grad(root, tensors, grad_outputs=grad_root, allow_unused=True, retain_graph=retain)
        for (name, _), g in zip(self.outputs, grads, strict=True):
            if g is not None:
                self.on_output_grad(name, self._rows(g, name), alpha)

    def accumulate_g_batched(self, root: torch.Tensor, grad_roots: torch.Tensor, *, alpha: float) -> bool:
        """Like ``accumulate_g`` for k seeds ``grad_roots`` (k, *root.shape) in one vmapped backward.

        Returns False (nothing accumulated) when the model has an op autograd cannot batch."""
        if not self.outputs:
            names = [t.name for t in self.targets]
            raise ValueError(f"none of the targets {names} ran in the model's forward pass")
        tensors = [t for _, t in self.outputs]
        try:
            grads = torch.autograd.grad(
                root, tensors, grad_outputs=grad_roots, allow_unused=True, retain_graph=True, is_grads_batched=True
            )
        except (RuntimeError, NotImplementedError):  # pragma: no cover - depends on the model's ops
            return False
        for (name, _), g in zip(self.outputs, grads, strict=True):
            if g is not None:
                picked = g if self.valid is None else g[:, self.valid_on(g.device)]
                rows = picked.reshape(-1, g.shape[-1]).float()  # (k * N, out), sample-major
                self.on_output_grad(name, rows, alpha)
        return True  # the graph (kept for a failed attempt's fallback) goes with the batch's tensors

    def finish_batch(self) -> None:
        self.outputs = []
        if self._a_batch or self._g_batch:
            self._route_units()
        self._a_batch = {}
        self._g_batch = {}

    def _row_offsets(self, n: int) -> list[int]:
        """Offsets of each batch row's first position among ``n`` row-major positions."""
        b = self._n_rows
        if self.valid is not None:
            if self._valid_counts is None:  # one device sync per batch
                self._valid_counts = [int(c) for c in self.valid.sum(dim=1).tolist()]
            counts = self._valid_counts
        else:  # images: every example has the same number of positions
            if b == 0 or n % b:
                raise ValueError(f"expected activation rows a multiple of the {b} images, got {n}")
            counts = [n // b] * b
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + int(c))
        if offsets[-1] != n:
            raise ValueError(f"expected {offsets[-1]} activation rows for the batch, got {n}")
        return offsets

    def _route_units(self) -> None:
        """Cut this batch's rows into units; gather pieces of the open unit; flush complete units."""
        r0, b = self._first_row, self._n_rows
        a_off = {key: self._row_offsets(a.shape[0]) for key, a in self._a_batch.items()}
        key_of = {t.name: t.input_key for t in self.targets}
        g3: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
        for name, parts in self._g_batch.items():
            n = self._a_batch[key_of[name]].shape[0]
            g3[name] = (a_off[key_of[name]], [p.view(-1, n, p.shape[-1]) for p in parts])
        counts = (
            self._row_offsets(int(self.valid.sum()))
            if self.valid is not None
            else self._row_offsets(self._n_rows * max(a.shape[0] // self._n_rows for a in self._a_batch.values()))
        )
        for u in range(r0 // ROWS_PER_UNIT, (r0 + b - 1) // ROWS_PER_UNIT + 1):
            lo = max(u * ROWS_PER_UNIT, r0) - r0
            hi = min((u + 1) * ROWS_PER_UNIT, r0 + b) - r0
            if self._unit is not None and self._unit != u:
                self._flush_unit()
            self._unit = u
            for key, a in self._a_batch.items():
                p0, p1 = a_off[key][lo], a_off[key][hi]
                if p1 > p0:
                    self._unit_a.setdefault(key, []).append(a[p0:p1])
            for name, (off, parts) in g3.items():
                p0, p1 = off[lo], off[hi]
                if p1 > p0:
                    piece = parts[0][:, p0:p1] if len(parts) == 1 else torch.cat([x[:, p0:p1] for x in parts])
                    self._unit_g.setdefault(name, []).append(piece)
            self._unit_count += counts[hi] - counts[lo]
            if (u + 1) * ROWS_PER_UNIT <= r0 + b:  # the unit's rows are all in: add it now
                self._flush_unit()
        # The open unit's pieces from this batch are views of the whole batch: keep copies only.
        for pieces in (*self._unit_a.values(), *self._unit_g.values()):
            if pieces and pieces[-1]._base is not None:
                pieces[-1] = pieces[-1].clone()

    def _flush_unit(self) -> None:
        """Add the gathered unit: one product per factor over its positions in row order
        (sample-major for ``G``), always on a fresh contiguous copy."""
        assert self._unit is not None
        row = self._unit * ROWS_PER_UNIT
        seg = 0
        if self.bounds is not None:
            if row >= self.bounds[-1]:
                raise ValueError(f"calibration row {row} is beyond the stream's {self.bounds[-1]} rows")
            seg = segment_of_row(self.bounds, row)
        if self._segment is not None and seg != self._segment:
            self._close_segment()
        self._segment = seg
        for key, pieces in self._unit_a.items():
            accumulate_outer(self.A[key], torch.cat(pieces), self.precision)
        for name, pieces in self._unit_g.items():
            g = torch.cat(pieces, dim=1)
            accumulate_outer(self.G[name], g.reshape(-1, g.shape[-1]), self.precision, alpha=self._alpha)
        self._segment_count += self._unit_count
        self._unit = None
        self._unit_a = {}
        self._unit_g = {}
        self._unit_count = 0

    def _close_segment(self, last: bool = False) -> None:
        """Hand the finished segment's sums on and zero them (a segment without positions is
        skipped). Totals: the first segment's accumulator becomes the total (``last``: no new one)."""
        seg, count = self._segment, self._segment_count
        self._segment = None
        self._segment_count = 0
        if seg is None or count == 0:
            return
        self.total_count += count
        if self.on_segment is not None:
            self.on_segment(seg, self.segment_factors(count))
            if not last:
                for acc in (*self.A.values(), *self.G.values()):
                    acc.zero_()
            return
        for totals, accs in ((self.total_A, self.A), (self.total_G, self.G)):
            for key, acc in accs.items():
                if key in totals:
                    totals[key] += acc
                    if not last:
                        acc.zero_()
                else:
                    totals[key] = acc
                    if not last:
                        accs[key] = torch.zeros_like(acc)

    def segment_factors(self, count: int) -> dict[str, KFACFactors]:
        """The current segment's sums per target (views of the accumulators: copy what you keep)."""
        return {t.name: KFACFactors(self.A[t.input_key], self.G[t.name], count) for t in self.targets}

    def finish(self) -> None:
        """After the last batch: add the open unit and close the open segment."""
        if self._unit is not None:
            self._flush_unit()
        self._close_segment(last=True)

    def result(self, count: int) -> dict[str, KFACFactors]:
        """The totals (every segment added in order), or zeros when nothing was collected; with
        ``on_segment`` nothing (the segments went there)."""
        if count != self.total_count:
            raise RuntimeError(f"expected {count} positions in the segment sums, got {self.total_count}")
        if self.on_segment is not None:
            return {}
        a = {k: self.total_A.get(k, torch.zeros_like(v)) for k, v in self.A.items()}
        g = {k: self.total_G.get(k, torch.zeros_like(v)) for k, v in self.G.items()}
        return {t.name: KFACFactors(a[t.input_key], g[t.name], count) for t in self.targets}


def _input_device(model: nn.Module) -> torch.device:
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device


DEFAULT_LOGITS_CHUNK = 1024


@dataclass(frozen=True)
class CollectOptions:
    """How the sums are estimated (all of it goes into the factor-cache key except ``logits_chunk``)."""

    fisher: Fisher = "sampled"
    seed: int = 0
    samples: int = 1
    precision: Precision = "fp32"
    logits_chunk: int = DEFAULT_LOGITS_CHUNK

    def __post_init__(self) -> None:
        if self.fisher not in ("sampled", "empirical"):
            raise ValueError(f"expected fisher 'sampled' or 'empirical', got {self.fisher!r}")
        if self.samples < 1:
            raise ValueError(f"expected samples >= 1, got {self.samples}")
        if self.fisher == "empirical" and self.samples != 1:
            raise ValueError(f"samples={self.samples} needs fisher='sampled' (the empirical label is unique)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"expected precision one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.logits_chunk < 1:
            raise ValueError(f"expected logits_chunk >= 1 (positions per chunk), got {self.logits_chunk}")


def collect_factors(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    targets: list[EditTarget],
    fisher: Fisher = "sampled",
    *,
    seed: int = 0,
    samples: int = 1,
    precision: Precision = "fp32",
    logits_chunk: int = DEFAULT_LOGITS_CHUNK,
    first_sequence: int = 0,
    stream_rows: int | None = None,
    total_tokens: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, KFACFactors]:
    """Run the model over ``batches`` once and return K-FAC sums per target name.

    ``batches`` yield ``{"input_ids": (B, T), "attention_mask": (B, T) optional}``; their rows are
    the sequences ``first_sequence, first_sequence + 1, ...`` of the calibration stream (the
    sampled labels are keyed by that index). ``progress`` gets (tokens fed so far = attention-mask
    sum, ``total_tokens``) after each batch; ``should_cancel`` is checked before each batch and
    raises ``JobCancelled`` when true. The model is run in eval mode with frozen parameters; both
    are restored afterwards.

    ``stream_rows`` (the rows of the whole calibration stream) sets the summation segments
    (``contract.summation``); the result is the sum of the segments the batches touch, in order.
    ``None``: one segment. Pass it whenever the result must equal a sharded run bit for bit.
    """
    opts = _options(targets, fisher, seed, samples, precision, logits_chunk, first_sequence, stream_rows)
    with torch.inference_mode(False):  # callers may run under inference_mode; we need autograd
        collector = _Collector(model, targets, opts.precision, stream_rows=stream_rows)
        return _collect(model, batches, targets, opts, first_sequence, total_tokens, progress, should_cancel, collector)


def collect_segment_factors(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    targets: list[EditTarget],
    fisher: Fisher = "sampled",
    *,
    stream_rows: int,
    on_segment: SegmentSink,
    seed: int = 0,
    samples: int = 1,
    precision: Precision = "fp32",
    logits_chunk: int = DEFAULT_LOGITS_CHUNK,
    first_sequence: int = 0,
    should_cancel: Callable[[], bool] | None = None,
) -> int:
    """Like ``collect_factors`` for a shard: each summation segment's sums go to ``on_segment``
    as soon as the segment is complete (segments without positions are not reported), so only
    one segment accumulator per factor exists. Returns the positions collected."""
    opts = _options(targets, fisher, seed, samples, precision, logits_chunk, first_sequence, stream_rows)
    with torch.inference_mode(False):
        collector = _Collector(model, targets, opts.precision, stream_rows=stream_rows, on_segment=on_segment)
        _collect(model, batches, targets, opts, first_sequence, None, None, should_cancel, collector)
    return collector.total_count


def _options(
    targets: list[EditTarget],
    fisher: Fisher,
    seed: int,
    samples: int,
    precision: Precision,
    logits_chunk: int,
    first_sequence: int,
    stream_rows: int | None,
) -> CollectOptions:
    opts = CollectOptions(fisher=fisher, seed=seed, samples=samples, precision=precision, logits_chunk=logits_chunk)
    if not targets:
        raise ValueError("expected at least one target")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate targets in {names}")
    if first_sequence < 0:
        raise ValueError(f"expected first_sequence >= 0, got {first_sequence}")
    if stream_rows is not None and stream_rows < 0:
        raise ValueError(f"expected stream_rows >= 0, got {stream_rows}")
    return opts


def _labels_and_feature_grads(
    feats: torch.Tensor,
    head: nn.Module | None,
    opts: CollectOptions,
    uniforms: torch.Tensor | None,
    next_tokens: torch.Tensor | None,
    row_counts: list[int] | None = None,
) -> list[torch.Tensor]:
    """d(sum of token losses)/d feats, one (N, F) tensor per sample, computed chunk by chunk.

    ``feats`` are the final hidden states at the valid positions (``head`` maps them to logits)
    or, with ``head=None``, the logits themselves. With ``row_counts`` (valid positions per
    sequence, row-major) a chunk never spans two sequences: sequence by sequence, at most
    ``logits_chunk`` of its positions at a time, each on a fresh copy -- so the head's matrix
    products see the same shapes and the same rows whatever the batch (their per-row results
    depend on the number of rows). Without it (image logits: only row-wise ops follow),
    ``logits_chunk`` rows at a time."""
    n = feats.shape[0]
    grads = [torch.empty_like(feats) for _ in range(opts.samples)]
    for rows in _chunks(n, opts.logits_chunk, row_counts):
        leaf = feats[rows].detach().clone().requires_grad_(True)
        logits = (head(leaf) if head is not None else leaf).float()
        if uniforms is not None:
            labels = inverse_cdf(logits.detach(), uniforms[rows])
        else:
            assert next_tokens is not None
            labels = next_tokens[rows, None].to(logits.device)
        for s in range(opts.samples):
            loss = F.cross_entropy(logits, labels[:, s], reduction="sum")
            (g,) = torch.autograd.grad(loss, leaf, retain_graph=s < opts.samples - 1)
            grads[s][rows] = g.to(feats.dtype)
        del logits, leaf
    return grads


def _chunks(n: int, chunk: int, row_counts: list[int] | None) -> list[slice]:
    """Position slices of ``_labels_and_feature_grads`` (see there)."""
    if row_counts is None:
        return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    if sum(row_counts) != n:
        raise ValueError(f"expected row counts summing to {n} positions, got {sum(row_counts)}")
    out: list[slice] = []
    start = 0
    for count in row_counts:
        out.extend(slice(start + j, start + min(j + chunk, count)) for j in range(0, count, chunk))
        start += count
    return out


SAMPLE_GROUP = 8  # samples per vmapped backward: k x the targets' output gradients in memory at once


def _backward_samples(collector: _Collector, feats: torch.Tensor, feat_grads: list[torch.Tensor]) -> None:
    """``G += (1/S) sum_s g_s g_s^T``: backward from ``feats`` once per sample, or in vmapped groups.

    Groups of up to ``SAMPLE_GROUP`` samples run as one batched backward (``is_grads_batched``),
    several times faster than one backward per sample on CPU; a model whose ops cannot be batched
    falls back to one backward per sample (same result)."""
    n = len(feat_grads)
    alpha = 1.0 / n
    start = 0
    batched = n > 1
    while start < n:
        group = feat_grads[start : start + SAMPLE_GROUP]
        if batched and len(group) > 1:
            if collector.accumulate_g_batched(feats, torch.stack(group), alpha=alpha):
                start += len(group)
                continue
            batched = False
        collector.accumulate_g(feats, feat_grads[start], alpha=alpha, retain=start < n - 1)
        start += 1


def _image_logits(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The classifier's logits (B, labels). For a ViT (``heads.split_classifier``) the head runs one
    image at a time: a matrix product's per-row bits depend on its row count, so a batched head would
    make the sums depend on the batch size."""
    split = split_classifier(model)
    if split is None:
        return model(pixel_values=pixels).logits
    cls = split.body(pixel_values=pixels).last_hidden_state[:, 0]
    return torch.cat([split.head(cls[i : i + 1]) for i in range(cls.shape[0])])


def _image_batch(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    first_row: int,
    device: torch.device,
    collector: _Collector,
    opts: CollectOptions,
) -> int:
    """One batch of an image classifier: ``{"pixel_values": (B, C, H, W), "labels": (B,) optional}``.

    The loss is the sum over images of ``-log p(y | image)``; every token position (patches and
    [CLS]) of every image is a row of ``a`` and ``g``. Sampled labels are drawn from the
    classifier's softmax with the counter ``(seed, image index, 0, sample)``; ``fisher="empirical"``
    takes ``labels``. Returns the token rows accumulated."""
    dtype = next(model.parameters()).dtype
    pixels = batch["pixel_values"].to(device=device, dtype=dtype).clone()
    if pixels.dim() != 4:
        raise ValueError(f"expected pixel_values of shape (B, C, H, W), got {tuple(pixels.shape)}")
    collector.start_batch(None, first_row=first_row, n_rows=int(pixels.shape[0]))
    logits = _image_logits(model, pixels)
    n = logits.shape[0]
    uniforms = next_labels = None
    if opts.fisher == "sampled":
        rows = torch.arange(first_row, first_row + n, device=logits.device)
        uniforms = counter_uniforms(opts.seed, rows, torch.zeros_like(rows), opts.samples)
    else:
        labels = batch.get("labels")
        if labels is None:
            raise ValueError("fisher='empirical' needs labels with the images")
        next_labels = labels.to(logits.device)
    feat_grads = _labels_and_feature_grads(logits, None, opts, uniforms, next_labels)
    _backward_samples(collector, logits, feat_grads)
    collector.finish_batch()
    return collector.rows_seen


def _collect(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    targets: list[EditTarget],
    opts: CollectOptions,
    first_sequence: int,
    total_tokens: int | None,
    progress: Callable[[int, int | None], None] | None,
    should_cancel: Callable[[], bool] | None,
    collector: _Collector | None = None,
) -> dict[str, KFACFactors]:
    """The hooked pass; ``collector`` (default: the K-FAC one) receives the rows (``ekfac`` passes its own)."""
    collector = _Collector(model, targets, opts.precision) if collector is None else collector
    in_device = _input_device(model)
    split = split_body_and_head(model)
    handles = [t.module(model).register_forward_hook(collector.hook(t)) for t in targets]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    count = 0
    tokens_done = 0
    next_row = first_sequence
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        model.eval()
        with torch.enable_grad():
            for batch in batches:
                if should_cancel is not None and should_cancel():
                    raise JobCancelled("factor collection cancelled")
                if "pixel_values" in batch:  # an image classifier: one loss per image
                    n_images = int(batch["pixel_values"].shape[0])
                    count += _image_batch(model, batch, next_row, in_device, collector, opts)
                    next_row += n_images
                    tokens_done += n_images
                    if progress is not None:
                        progress(tokens_done, total_tokens)
                    continue
                input_ids = batch["input_ids"].to(in_device).clone()  # a normal tensor even if
                mask = batch.get("attention_mask")  # the batch was made under inference_mode
                mask = torch.ones_like(input_ids) if mask is None else mask.to(in_device).clone()
                if input_ids.dim() != 2 or mask.shape != input_ids.shape:
                    raise ValueError(
                        f"expected input_ids and attention_mask of one shape (B, T), "
                        f"got {tuple(input_ids.shape)} and {tuple(mask.shape)}"
                    )
                first = next_row
                rows = torch.arange(first, first + input_ids.shape[0], device=in_device)
                next_row += input_ids.shape[0]
                valid = valid_positions(mask)
                n_valid = int(valid.sum())
                tokens_done += int(mask.sum())
                if n_valid > 0:
                    n_rows = int(input_ids.shape[0])
                    if n_rows == 1:  # run a lone row as two: it and a copy whose positions are dropped
                        input_ids, mask = input_ids.repeat(2, 1), mask.repeat(2, 1)
                        valid = torch.cat([valid, torch.zeros_like(valid)])
                    collector.start_batch(valid, first_row=first, n_rows=n_rows)
                    kwargs = {"input_ids": input_ids, "attention_mask": mask, "use_cache": False}
                    if split is not None:
                        out = split.body(**kwargs).last_hidden_state
                        head: nn.Module | None = split.head
                    else:
                        out = model(**kwargs).logits
                        head = None
                    v = valid.to(out.device)
                    feats = out[v]  # (N, F): hidden state (or logits) at each valid position
                    b_idx, t_idx = v.nonzero(as_tuple=True)  # row-major, the order of out[v]
                    uniforms = next_tokens = None
                    if opts.fisher == "sampled":
                        uniforms = counter_uniforms(opts.seed, rows.to(out.device)[b_idx], t_idx, opts.samples)
                    else:
                        nxt = torch.zeros_like(input_ids)
                        nxt[:, :-1] = input_ids[:, 1:]
                        next_tokens = nxt.to(out.device)[v]
                    row_counts = valid.sum(dim=1).tolist() if head is not None else None
                    feat_grads = _labels_and_feature_grads(feats, head, opts, uniforms, next_tokens, row_counts)
                    _backward_samples(collector, feats, feat_grads)
                    collector.finish_batch()
                    count += n_valid
                    del out, feats, feat_grads
                if progress is not None:
                    progress(tokens_done, total_tokens)
        collector.finish()
    finally:
        for h in handles:
            h.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
        collector.outputs = []
    return collector.result(count)
