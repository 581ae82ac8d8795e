"""Packing documents into fixed-length token sequences (the same layout as calibration data).

Each document is tokenized without special tokens, documents are joined with EOS between them,
and the stream is cut into ``seq_len`` sequences until ``max_tokens`` tokens are taken. The last
sequence may be shorter. This mirrors the curvature engine's calibration packing; it lives here
too so evaluation does not depend on the engine's internals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def encode(tokenizer: object, text: str | Sequence[int]) -> list[int]:
    """Token ids of ``text`` without special tokens; token-id lists pass through unchanged."""
    if isinstance(text, str):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    return [int(t) for t in text]


def eos_id(tokenizer: object) -> int | None:
    """The tokenizer's EOS id (or None when it has none)."""
    value = getattr(tokenizer, "eos_token_id", None)
    return int(value) if isinstance(value, int) else None


def pack_token_stream(
    documents: Iterable[Sequence[int]], *, seq_len: int, max_tokens: int, separator: int | None
) -> list[list[int]]:
    """Concatenate token lists with ``separator`` between documents and cut into ``seq_len`` pieces,
    keeping at most ``max_tokens`` tokens in total. A trailing piece shorter than 2 tokens (nothing to
    predict) is dropped."""
    if seq_len < 2:
        raise ValueError("seq_len must be >= 2")
    if max_tokens < 2:
        raise ValueError("max_tokens must be >= 2")
    stream: list[int] = []
    for i, doc in enumerate(documents):
        if i > 0 and separator is not None:
            stream.append(separator)
        stream.extend(int(t) for t in doc)
        if len(stream) >= max_tokens:
            break
    stream = stream[:max_tokens]
    pieces = [stream[s : s + seq_len] for s in range(0, len(stream), seq_len)]
    return [p for p in pieces if len(p) >= 2]


def pack_texts(
    tokenizer: object, texts: Iterable[str | Sequence[int]], *, seq_len: int, max_tokens: int
) -> list[list[int]]:
    """Tokenize ``texts`` and pack them with EOS between documents (see ``pack_token_stream``)."""

    def docs() -> Iterable[list[int]]:
        for t in texts:
            ids = encode(tokenizer, t)
            if ids:
                yield ids

    return pack_token_stream(docs(), seq_len=seq_len, max_tokens=max_tokens, separator=eos_id(tokenizer))
