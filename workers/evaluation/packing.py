"""Tokenizing evaluation inputs, and packing texts exactly like calibration data.

``encode`` turns text into token ids without special tokens (token-id lists pass through).
``pack_texts`` delegates to the curvature engine's calibration packing
(``workers.curvature.calibration.pack_texts_masked``: each document followed by EOS, ``seq_len``
rows, a ``max_tokens`` budget, the trailing partial row kept) and returns the rows as ragged
token-id lists without their padding, so perplexity and agreement see the layout the factors saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from workers.curvature.calibration import pack_texts_masked


def encode(tokenizer: object, text: str | Sequence[int]) -> list[int]:
    """Token ids of ``text`` without special tokens; token-id lists pass through unchanged."""
    if isinstance(text, str):
        if tokenizer is None:
            raise ValueError("text inputs need a tokenizer")
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    return [int(t) for t in text]


def pack_texts(tokenizer: object, texts: Iterable[str], *, seq_len: int, max_tokens: int) -> list[list[int]]:
    """Calibration-style packed rows of ``texts`` as token-id lists; rows with fewer than 2 tokens
    (nothing to predict) are dropped."""
    ids, mask = pack_texts_masked(tokenizer, texts, seq_len, max_tokens)
    rows = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    return [r for r in rows if len(r) >= 2]
