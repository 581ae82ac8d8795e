"""Held-out perplexity, token-weighted over every predicted position.

``perplexity = exp(total NLL / total predicted tokens)`` — the sum runs over every position that has
a next-token target in every sequence, so it is *not* a mean of per-batch exponentials (which would
over-weight short batches). Texts are packed exactly like calibration data (EOS after each
document, ``seq_len`` sequences, a ``max_tokens`` budget; see ``workers.evaluation.packing``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import nn

from workers.evaluation.batching import chunks, eval_mode, model_device, pad_batch, pad_token_id
from workers.evaluation.packing import pack_texts


@dataclass
class PerplexityReport:
    """Token-weighted perplexity and the sums it is made of."""

    perplexity: float
    mean_nll: float
    total_nll: float
    tokens: int
    sequences: int
    seq_len: int

    def summary(self) -> dict[str, float | int]:
        return {"perplexity": self.perplexity, "mean_nll": self.mean_nll, "tokens": self.tokens}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sequence_nll(
    model: nn.Module, sequences: Sequence[Sequence[int]], *, batch_size: int = 8, pad_id: int = 0
) -> tuple[float, int]:
    """Summed next-token NLL (float64 accumulation) and the number of predicted tokens over
    ``sequences`` (each of length >= 2), right-padded in batches."""
    device = model_device(model)
    total = 0.0
    count = 0
    with eval_mode(model):
        for group in chunks(list(sequences), batch_size):
            batch = pad_batch(group, pad_id, side="right", device=device)
            logits = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
            ).logits
            # Logits may live on another device than the inputs (device_map): score where they are.
            targets = batch.input_ids[:, 1:].to(logits.device)
            valid = batch.attention_mask[:, 1:].bool().to(logits.device)
            nll = F.cross_entropy(
                logits[:, :-1, :].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).view_as(targets)
            total += float(nll[valid].double().sum().item())
            count += int(valid.sum().item())
    return total, count


def perplexity_of_sequences(
    model: nn.Module, sequences: Sequence[Sequence[int]], *, batch_size: int = 8, pad_id: int = 0, seq_len: int = 0
) -> PerplexityReport:
    """Perplexity over already-tokenized sequences."""
    total, count = sequence_nll(model, sequences, batch_size=batch_size, pad_id=pad_id)
    if count == 0:
        raise ValueError("no predicted tokens: perplexity needs sequences of at least 2 tokens")
    mean = total / count
    return PerplexityReport(
        perplexity=math.exp(mean),
        mean_nll=mean,
        total_nll=total,
        tokens=count,
        sequences=len(sequences),
        seq_len=seq_len or max(len(s) for s in sequences),
    )


def evaluate_perplexity(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    seq_len: int = 256,
    max_tokens: int = 100_000,
    batch_size: int = 8,
) -> PerplexityReport:
    """Token-weighted perplexity of ``model`` on ``texts`` packed into ``seq_len`` sequences."""
    sequences = pack_texts(tokenizer, texts, seq_len=seq_len, max_tokens=max_tokens)
    return perplexity_of_sequences(
        model, sequences, batch_size=batch_size, pad_id=pad_token_id(tokenizer, model), seq_len=seq_len
    )
