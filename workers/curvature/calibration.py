"""Turn calibration text into packed token sequences and model batches.

Documents are tokenized without special tokens and joined with the tokenizer's EOS token after
each document, up to a token budget (``max_tokens``), then cut into rows of ``seq_len``.

``pack_texts`` keeps only full rows: the trailing partial row is dropped (so every id is a real
token and no mask is needed). ``pack_texts_masked`` keeps the trailing partial row, right-padded
with the pad id, and returns the attention mask beside the ids. ``iter_batches`` slices either
into ``{"input_ids", "attention_mask"}`` dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; calibration packing needs one between documents")
    return int(eos)


def _token_stream(tokenizer: Any, texts: Iterable[str], max_tokens: int) -> list[int]:
    if max_tokens < 1:
        raise ValueError(f"expected max_tokens >= 1, got {max_tokens}")
    eos = _eos_id(tokenizer)
    stream: list[int] = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"expected calibration documents as str, got {type(text).__name__}")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        stream.append(eos)
        if len(stream) >= max_tokens:
            break
    return stream[:max_tokens]


def _check_seq_len(seq_len: int) -> None:
    if seq_len < 2:
        raise ValueError(f"expected seq_len >= 2 (a position needs a next token), got {seq_len}")


def pack_texts(tokenizer: Any, texts: Iterable[str], seq_len: int, max_tokens: int) -> torch.Tensor:
    """Full ``seq_len`` rows of the EOS-joined token stream, shape ``(n_seq, seq_len)``, int64.

    The trailing partial row is dropped; a corpus shorter than one row is an error (use
    ``pack_texts_masked`` to keep it).
    """
    _check_seq_len(seq_len)
    stream = _token_stream(tokenizer, texts, max_tokens)
    n_seq = len(stream) // seq_len
    if n_seq == 0:
        raise ValueError(
            f"calibration corpus yields {len(stream)} tokens, fewer than one sequence of seq_len={seq_len}"
        )
    return torch.tensor(stream[: n_seq * seq_len], dtype=torch.long).view(n_seq, seq_len)


def pack_texts_masked(
    tokenizer: Any, texts: Iterable[str], seq_len: int, max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``pack_texts`` but keeps the trailing partial row, right-padded; returns (ids, mask)."""
    _check_seq_len(seq_len)
    stream = _token_stream(tokenizer, texts, max_tokens)
    if not stream:
        raise ValueError("calibration corpus is empty")
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = _eos_id(tokenizer) if pad is None else int(pad)
    n_seq = -(-len(stream) // seq_len)
    ids = torch.full((n_seq * seq_len,), pad, dtype=torch.long)
    mask = torch.zeros(n_seq * seq_len, dtype=torch.long)
    ids[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    mask[: len(stream)] = 1
    return ids.view(n_seq, seq_len), mask.view(n_seq, seq_len)


def iter_batches(
    input_ids: torch.Tensor,
    batch_size: int,
    attention_mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{"input_ids", "attention_mask"}`` slices of ``batch_size`` rows (mask all ones if None)."""
    if input_ids.dim() != 2:
        raise ValueError(f"expected input_ids of shape (n_seq, seq_len), got {tuple(input_ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"expected attention_mask of shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
        )
    for start in range(0, input_ids.shape[0], batch_size):
        batch = {
            "input_ids": input_ids[start : start + batch_size],
            "attention_mask": attention_mask[start : start + batch_size],
        }
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        yield batch


def count_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> int:
    """Tokens the batches will feed (the ``total_tokens`` of ``collect_factors``'s progress)."""
    return int(input_ids.numel() if attention_mask is None else attention_mask.sum())
