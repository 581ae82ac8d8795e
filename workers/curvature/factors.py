"""K-FAC factor collection: input and output-gradient second moments of the edited layers.

For every target ``W`` (out x in) and every valid token position ``t``:

* ``a_t`` is the layer input (``in``), ``A_sum = sum_t a_t a_t^T``;
* ``g_t`` is the gradient of the sequence's loss w.r.t. the layer output at ``t`` (``out``),
  ``G_sum = sum_t g_t g_t^T``.

Loss convention: the loss of a batch is the SUM over its valid positions of the token log-loss
``-log p(y_t | x_<=t)`` (no mean), so ``g_t = d(sum_s loss_s) / d out_t`` -- the usual K-FAC
per-token gradient (through causal attention it collects the losses at positions >= t of the
same sequence). Labels ``y_t``: ``fisher="sampled"`` draws them from the model's own
``softmax(logits_t)`` (true Fisher) by inverse-CDF sampling: per batch, one uniform per valid
position from ``torch.rand`` with a ``torch.Generator`` seeded by ``seed`` (on the logits'
device), ``label = #{k : cdf_k <= u * cdf_last}`` (see ``sample_labels``; several times faster
than ``torch.multinomial`` over a large vocabulary);
``fisher="empirical"`` uses the corpus's next token.

Valid positions: ``attention_mask[t] == 1`` and ``attention_mask[t + 1] == 1`` (so the last
position of each row, which has no next-token target, and padding are excluded). ``count`` is
the number of valid positions; sums are float32 whatever the model dtype, so shards add.

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

from workers.curvature.targets import EditTarget, module_weight
from workers.pipeline.reporting import JobCancelled

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


def sample_labels(logits: torch.Tensor, generator: torch.Generator, chunk_rows: int = 1024) -> torch.Tensor:
    """One label per row of ``logits`` (N, V) drawn from ``softmax(logits)`` by inverse CDF.

    All N uniforms are drawn first (so chunking, which bounds the float32 (rows, V) temporaries,
    does not change the result).
    """
    with torch.no_grad():
        u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device, dtype=torch.float32)
        labels = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        for start in range(0, logits.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            cdf = torch.cumsum(torch.softmax(logits[rows].float(), dim=-1), dim=-1)
            idx = torch.searchsorted(cdf, u[rows] * cdf[:, -1:], right=True).squeeze(1)
            labels[rows] = idx.clamp_(max=cdf.shape[1] - 1)
        return labels


class _Collector:
    """Hooks and accumulators for one ``collect_factors`` call."""

    def __init__(self, model: nn.Module, targets: list[EditTarget]) -> None:
        self.targets = targets
        self.A: dict[str, torch.Tensor] = {}
        self.G: dict[str, torch.Tensor] = {}
        for t in targets:
            dev = module_weight(t.module(model)).device
            if t.input_key not in self.A:
                self.A[t.input_key] = torch.zeros(t.in_features, t.in_features, dtype=torch.float32, device=dev)
            self.G[t.name] = torch.zeros(t.out_features, t.out_features, dtype=torch.float32, device=dev)
        self.valid: torch.Tensor | None = None
        self._valid_on: dict[torch.device, torch.Tensor] = {}
        self._a_done: set[str] = set()
        self.outputs: list[tuple[str, torch.Tensor]] = []

    def start_batch(self, valid: torch.Tensor) -> None:
        self.valid = valid
        self._valid_on = {valid.device: valid}
        self._a_done = set()
        self.outputs = []

    def valid_on(self, device: torch.device) -> torch.Tensor:
        assert self.valid is not None
        if device not in self._valid_on:
            self._valid_on[device] = self.valid.to(device)
        return self._valid_on[device]

    def _rows(self, x: torch.Tensor, name: str) -> torch.Tensor:
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
                a = self._rows(args[0].detach(), target.name)
                acc = self.A[target.input_key]
                acc.addmm_(a.T.to(acc.device), a.to(acc.device))
            replaced = None
            if not output.requires_grad:
                # Nothing upstream needs a gradient: start the graph here (cuts the backward).
                output = output.detach().requires_grad_(True)
                replaced = output
            self.outputs.append((target.name, output))
            return replaced

        return forward_hook

    def accumulate_g(self, loss: torch.Tensor) -> None:
        if not self.outputs:
            names = [t.name for t in self.targets]
            raise ValueError(f"none of the targets {names} ran in the model's forward pass")
        tensors = [t for _, t in self.outputs]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for (name, _), g in zip(self.outputs, grads, strict=True):
            if g is None:
                continue
            rows = self._rows(g, name)
            acc = self.G[name]
            acc.addmm_(rows.T.to(acc.device), rows.to(acc.device))
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


def collect_factors(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    targets: list[EditTarget],
    fisher: Fisher = "sampled",
    *,
    seed: int = 0,
    total_tokens: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, KFACFactors]:
    """Run the model over ``batches`` once and return K-FAC sums per target name.

    ``batches`` yield ``{"input_ids": (B, T), "attention_mask": (B, T) optional}``. ``progress``
    gets (tokens fed so far = attention-mask sum, ``total_tokens``) after each batch;
    ``should_cancel`` is checked before each batch and raises ``JobCancelled`` when true.
    The model is run in eval mode with frozen parameters; both are restored afterwards.
    """
    if fisher not in ("sampled", "empirical"):
        raise ValueError(f"expected fisher 'sampled' or 'empirical', got {fisher!r}")
    if not targets:
        raise ValueError("expected at least one target")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate targets in {names}")

    with torch.inference_mode(False):  # callers may run under inference_mode; we need autograd
        return _collect(model, batches, targets, fisher, seed, total_tokens, progress, should_cancel)


def _collect(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    targets: list[EditTarget],
    fisher: Fisher,
    seed: int,
    total_tokens: int | None,
    progress: Callable[[int, int | None], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> dict[str, KFACFactors]:
    collector = _Collector(model, targets)
    in_device = _input_device(model)
    generator: torch.Generator | None = None
    handles = [t.module(model).register_forward_hook(collector.hook(t)) for t in targets]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    count = 0
    tokens_done = 0
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        model.eval()
        with torch.enable_grad():
            for batch in batches:
                if should_cancel is not None and should_cancel():
                    raise JobCancelled("factor collection cancelled")
                input_ids = batch["input_ids"].to(in_device).clone()  # a normal tensor even if
                mask = batch.get("attention_mask")  # the batch was made under inference_mode
                mask = torch.ones_like(input_ids) if mask is None else mask.to(in_device).clone()
                if input_ids.dim() != 2 or mask.shape != input_ids.shape:
                    raise ValueError(
                        f"expected input_ids and attention_mask of one shape (B, T), "
                        f"got {tuple(input_ids.shape)} and {tuple(mask.shape)}"
                    )
                valid = valid_positions(mask)
                n_valid = int(valid.sum())
                tokens_done += int(mask.sum())
                if n_valid > 0:
                    collector.start_batch(valid)
                    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
                    v = valid.to(logits.device)
                    lg = logits[v].float()  # (N, V): the prediction made at each valid position
                    if fisher == "sampled":
                        if generator is None:
                            generator = torch.Generator(device=lg.device).manual_seed(seed)
                        labels = sample_labels(lg.detach(), generator)
                    else:
                        nxt = torch.zeros_like(input_ids)
                        nxt[:, :-1] = input_ids[:, 1:]
                        labels = nxt.to(logits.device)[v]
                    loss = F.cross_entropy(lg, labels, reduction="sum")
                    collector.accumulate_g(loss)
                    count += n_valid
                    del logits, lg, loss
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
