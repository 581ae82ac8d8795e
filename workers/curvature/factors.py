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
the body runs once per batch and ``head(hidden)`` runs over ``logits_chunk`` valid positions at a
time -- the label sampling, the loss and its gradient w.r.t. those hidden states are done chunk by
chunk -- and one backward from the hidden states (with the stacked hidden-state gradients) gives
the ``g_t``. So no (positions x vocabulary) tensor exists beyond one chunk. Models that do not
split take the logits from the full forward (same arithmetic, one big logits tensor).

Valid positions: ``attention_mask[t] == 1`` and ``attention_mask[t + 1] == 1`` (so the last
position of each row, which has no next-token target, and padding are excluded). ``count`` is
the number of valid positions; sums are float32 whatever the model dtype, so shards add.
``precision`` (``fp32`` | ``tf32`` | ``bf16``) sets the precision of the accumulation's matrix
product inputs (``workers.curvature.precision``); the accumulators stay float32.

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

from workers.curvature.cancellation import JobCancelled
from workers.curvature.heads import split_body_and_head
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


def valid_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Bool (B, T): positions that are real tokens and have a real next token."""
    m = attention_mask.bool()
    valid = torch.zeros_like(m)
    valid[:, :-1] = m[:, :-1] & m[:, 1:]
    return valid


class _Collector:
    """Hooks and accumulators for one ``collect_factors`` call."""

    def __init__(
        self, model: nn.Module, targets: list[EditTarget], precision: Precision, *, allocate: bool = True
    ) -> None:
        self.targets = targets
        self.precision = precision
        self.A: dict[str, torch.Tensor] = {}
        self.G: dict[str, torch.Tensor] = {}
        for t in targets if allocate else []:  # a subclass with other accumulators skips A and G
            dev = module_weight(t.module(model)).device
            if t.input_key not in self.A:
                self.A[t.input_key] = torch.zeros(t.in_features, t.in_features, dtype=torch.float32, device=dev)
            self.G[t.name] = torch.zeros(t.out_features, t.out_features, dtype=torch.float32, device=dev)
        self.valid: torch.Tensor | None = None
        self.rows_seen = 0  # token rows of the current batch (image batches count them in the hooks)
        self._valid_on: dict[torch.device, torch.Tensor] = {}
        self._a_done: set[str] = set()
        self.outputs: list[tuple[str, torch.Tensor]] = []

    def start_batch(self, valid: torch.Tensor | None) -> None:
        """``valid`` (B, T) selects the token positions; ``None``: every position (image models)."""
        self.valid = valid
        self._valid_on = {} if valid is None else {valid.device: valid}
        self._a_done = set()
        self.outputs = []
        self.rows_seen = 0

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
        """The valid input rows (N, in) of ``target`` (once per input key and batch): ``A += a^T a``."""
        accumulate_outer(self.A[target.input_key], a, self.precision)

    def on_output_grad(self, name: str, g: torch.Tensor, alpha: float) -> None:
        """Output-gradient rows of target ``name``: (N, out), or (k N, out) sample-major for k
        batched samples. ``G += alpha g^T g``."""
        accumulate_outer(self.G[name], g, self.precision, alpha=alpha)

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

    def result(self, count: int) -> dict[str, KFACFactors]:
        return {t.name: KFACFactors(self.A[t.input_key], self.G[t.name], count) for t in self.targets}


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
    """
    opts = CollectOptions(fisher=fisher, seed=seed, samples=samples, precision=precision, logits_chunk=logits_chunk)
    if not targets:
        raise ValueError("expected at least one target")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate targets in {names}")
    if first_sequence < 0:
        raise ValueError(f"expected first_sequence >= 0, got {first_sequence}")

    with torch.inference_mode(False):  # callers may run under inference_mode; we need autograd
        return _collect(model, batches, targets, opts, first_sequence, total_tokens, progress, should_cancel)


def _labels_and_feature_grads(
    feats: torch.Tensor,
    head: nn.Module | None,
    opts: CollectOptions,
    uniforms: torch.Tensor | None,
    next_tokens: torch.Tensor | None,
) -> list[torch.Tensor]:
    """d(sum of token losses)/d feats, one (N, F) tensor per sample, computed ``logits_chunk`` rows at a time.

    ``feats`` are the final hidden states at the valid positions (``head`` maps them to logits)
    or, with ``head=None``, the logits themselves."""
    n = feats.shape[0]
    grads = [torch.empty_like(feats) for _ in range(opts.samples)]
    for start in range(0, n, opts.logits_chunk):
        rows = slice(start, start + opts.logits_chunk)
        leaf = feats[rows].detach().requires_grad_(True)
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
    collector.start_batch(None)
    logits = model(pixel_values=pixels).logits
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
                rows = torch.arange(next_row, next_row + input_ids.shape[0], device=in_device)
                next_row += input_ids.shape[0]
                valid = valid_positions(mask)
                n_valid = int(valid.sum())
                tokens_done += int(mask.sum())
                if n_valid > 0:
                    collector.start_batch(valid)
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
                    feat_grads = _labels_and_feature_grads(feats, head, opts, uniforms, next_tokens)
                    _backward_samples(collector, feats, feat_grads)
                    collector.finish_batch()
                    count += n_valid
                    del out, feats, feat_grads
                if progress is not None:
                    progress(tokens_done, total_tokens)
    finally:
        for h in handles:
            h.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
        collector.outputs = []
    return collector.result(count)
