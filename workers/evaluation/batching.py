"""Running a model over token sequences for evaluation: padding, chunking, device and eval mode.

Every metric in this package feeds token-id lists through a causal LM. The helpers here turn
ragged lists into padded ``(input_ids, attention_mask, position_ids)`` batches on the model's
device, so left padding (for generation) and right padding (for scoring) are done one way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


@dataclass
class PaddedBatch:
    """A padded batch: ``input_ids`` and ``attention_mask`` of shape ``(B, T)`` and matching
    ``position_ids`` that count only real tokens (so left padding does not shift positions)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's input embeddings (the first parameter for plain modules)."""
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        emb = get()
        if emb is not None and hasattr(emb, "weight"):
            return emb.weight.device
    return next(model.parameters()).device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Switch ``model`` to eval mode and disable autograd, restoring the training flag after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, *, side: str = "right", device: torch.device | None = None
) -> PaddedBatch:
    """Pad token-id lists to a common length on ``side`` ("left" or "right")."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    if not sequences:
        raise ValueError("cannot pad an empty batch")
    width = max(len(s) for s in sequences)
    if width == 0:
        raise ValueError("cannot pad a batch of empty sequences")
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        if n == 0:
            continue
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, cols] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, cols] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    if device is not None:
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    return PaddedBatch(ids, mask, positions)


def pad_token_id(tokenizer: object | None, model: nn.Module | None = None) -> int:
    """The id used for padding: the tokenizer's pad, else its EOS, else the model config's, else 0.
    Padded positions are always masked, so the choice never changes a result."""
    for owner in (tokenizer, getattr(model, "config", None)):
        for attr in ("pad_token_id", "eos_token_id"):
            value = getattr(owner, attr, None) if owner is not None else None
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, int):
                return value
    return 0
