"""Agreement of an edited model with the original: nDCG@K of next-token top-K rankings.

At every scored position the original model's top-K tokens ``o_1..o_K`` (descending logit) define
graded relevances ``rel(o_r) = K - r + 1`` (K for its top token, 1 for its K-th, 0 for any token
outside its top-K). The edited model's top-K list ``e_1..e_K`` is scored as

    DCG  = sum_{r=1..K} rel(e_r) / log2(r + 1)
    IDCG = sum_{r=1..K} (K - r + 1) / log2(r + 1)      (the original ranking itself)
    nDCG = DCG / IDCG  in [0, 1],

so nDCG is 1 exactly when the edited model ranks the same K tokens in the same order, and it
falls as tokens leave the original top-K or move away from their original rank. The report is the
mean over positions (every position with a next-token target, padding excluded), as in the paper.

The pipeline edits weights in place, so ``reference_topk`` must run on the unedited model *before*
the edit; ``evaluate_agreement`` then runs the edited model on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from workers.evaluation.batching import PaddedBatch, chunks, eval_mode, model_device, pad_batch, pad_token_id
from workers.evaluation.packing import pack_texts

BatchLike = torch.Tensor | PaddedBatch | dict[str, torch.Tensor] | Sequence[Sequence[int]]


@dataclass
class TopKReference:
    """The unedited model's top-K token ids at every scored position of ``batches``."""

    k: int
    batches: list[PaddedBatch]
    topk: list[torch.Tensor] = field(default_factory=list)  # per batch: (valid positions, k) int64, on CPU

    @property
    def positions(self) -> int:
        return sum(int(t.shape[0]) for t in self.topk)


@dataclass
class AgreementReport:
    """Mean nDCG@k over ``positions`` scored positions, plus top-1 agreement and top-k overlap."""

    ndcg: float
    k: int
    positions: int
    top1_agreement: float
    topk_overlap: float

    def summary(self) -> dict[str, float | int]:
        return {f"ndcg@{self.k}": self.ndcg, "top1_agreement": self.top1_agreement}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ndcg_at_k(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Per-row nDCG of ``candidate`` top-K ids against ``reference`` top-K ids, both ``(N, K)`` in
    descending rank order (definition in the module docstring)."""
    if reference.shape != candidate.shape or reference.dim() != 2:
        raise ValueError("reference and candidate must both be (N, K)")
    k = reference.shape[1]
    gains = torch.arange(k, 0, -1, dtype=torch.float64)  # K, K-1, ..., 1 for original ranks 1..K
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    match = candidate[:, :, None] == reference[:, None, :]  # (N, K_cand, K_ref)
    rel = (match.to(torch.float64) * gains).sum(dim=-1)  # (N, K_cand)
    dcg = (rel * discounts).sum(dim=-1)
    idcg = float((gains * discounts).sum())
    return dcg / idcg


def _as_batches(inputs: BatchLike | Iterable[BatchLike], pad_id: int, batch_size: int) -> list[PaddedBatch]:
    """Normalise the accepted input forms to a list of PaddedBatch on CPU."""

    def from_tensor(ids: torch.Tensor, mask: torch.Tensor | None) -> PaddedBatch:
        ids = ids.long().cpu()
        if ids.dim() == 1:
            ids = ids[None]
        m = torch.ones_like(ids) if mask is None else mask.long().cpu().reshape(ids.shape)
        return PaddedBatch(ids, m, (m.cumsum(dim=1) - 1).clamp(min=0))

    if isinstance(inputs, PaddedBatch):
        return [inputs]
    if isinstance(inputs, torch.Tensor):
        return [from_tensor(inputs[s : s + batch_size], None) for s in range(0, inputs.shape[0], batch_size)]
    if isinstance(inputs, dict):
        return [from_tensor(inputs["input_ids"], inputs.get("attention_mask"))]
    items = list(inputs)
    if items and all(
        isinstance(x, Sequence) and not isinstance(x, str) and all(isinstance(t, int) for t in x) for x in items
    ):
        return [pad_batch(g, pad_id, side="right") for g in chunks(items, batch_size)]  # type: ignore[arg-type]
    out: list[PaddedBatch] = []
    for item in items:
        out.extend(_as_batches(item, pad_id, batch_size))
    return out


def _topk_per_batch(model: nn.Module, batches: Sequence[PaddedBatch], k: int) -> list[torch.Tensor]:
    device = model_device(model)
    result = []
    with eval_mode(model):
        for b in batches:
            logits = model(
                input_ids=b.input_ids.to(device),
                attention_mask=b.attention_mask.to(device),
                position_ids=b.position_ids.to(device),
            ).logits
            valid = b.attention_mask[:, 1:].bool().to(logits.device)  # positions with a next-token target
            top = logits[:, :-1, :].float().topk(k, dim=-1).indices
            result.append(top[valid].cpu())
    return result


def reference_topk(
    model: nn.Module,
    batches_or_input_ids: BatchLike | Iterable[BatchLike],
    k: int = 10,
    *,
    batch_size: int = 8,
    pad_id: int = 0,
) -> TopKReference:
    """Record the (unedited) model's top-``k`` next tokens on the given inputs.

    Accepts an ``(N, T)`` id tensor, a dict with ``input_ids`` / ``attention_mask``, a ``PaddedBatch``,
    a list of token-id lists (right-padded into batches), or an iterable of any of these.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    batches = _as_batches(batches_or_input_ids, pad_id, batch_size)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    weight = getattr(head, "weight", None)
    vocab = int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None
    if vocab is not None and k > vocab:
        raise ValueError(f"k={k} exceeds the vocabulary size {vocab}")
    return TopKReference(k=k, batches=batches, topk=_topk_per_batch(model, batches, k))


def reference_topk_for_texts(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    k: int = 10,
    seq_len: int = 256,
    max_tokens: int = 20_000,
    batch_size: int = 8,
) -> TopKReference:
    """``reference_topk`` on ``texts`` packed like calibration data (the pipeline's entry point)."""
    sequences = pack_texts(tokenizer, texts, seq_len=seq_len, max_tokens=max_tokens)
    return reference_topk(model, sequences, k, batch_size=batch_size, pad_id=pad_token_id(tokenizer, model))


def evaluate_agreement(model: nn.Module, reference: TopKReference) -> AgreementReport:
    """Mean nDCG@k of ``model``'s top-k rankings against ``reference`` on the same inputs."""
    current = _topk_per_batch(model, reference.batches, reference.k)
    ref = torch.cat(reference.topk) if reference.topk else torch.zeros((0, reference.k), dtype=torch.long)
    cand = torch.cat(current) if current else torch.zeros_like(ref)
    n = int(ref.shape[0])
    if n == 0:
        raise ValueError("the reference holds no scored positions (sequences need at least 2 tokens)")
    scores = ndcg_at_k(ref, cand)
    overlap = (cand[:, :, None] == ref[:, None, :]).any(dim=-1).double().mean(dim=-1)
    return AgreementReport(
        ndcg=float(scores.mean()),
        k=reference.k,
        positions=n,
        top1_agreement=float((cand[:, 0] == ref[:, 0]).double().mean()),
        topk_overlap=float(overlap.mean()),
    )
