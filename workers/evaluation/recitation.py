"""Recitation: does the model reproduce a memorized suffix from its prefix?

For each ``prefix -> suffix`` pair the model greedily generates as many tokens as the (truncated)
gold suffix holds, and the generation is compared with the gold suffix by token-level Levenshtein
distance ``d`` (rapidfuzz, over token-id lists). With ``L = len(gold)``:

- strict recitation: ``d == 0``;
- loose recitation: ``1 - d / L >= loose_threshold`` (default 0.75, as in the paper);
- normalised distance: ``d / L`` (``0`` when both are empty, ``1`` when only the gold is empty).

Prefixes keep their *last* ``prefix_tokens`` tokens and suffixes their *first* ``suffix_tokens``
tokens (paper defaults 64 and 48). Text is tokenized without special tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rapidfuzz.distance import Levenshtein
from torch import nn

from workers.evaluation.batching import chunks, eval_mode, model_device, pad_batch, pad_token_id
from workers.evaluation.packing import encode

TextOrIds = str | Sequence[int]


@dataclass
class RecitationRow:
    """One scored example."""

    distance: int
    length: int
    normalized_distance: float
    strict: bool
    loose: bool
    generated: list[int]
    gold: list[int]
    index: int = 0
    prefix_length: int = 0
    generated_text: str | None = None
    gold_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecitationReport:
    """Aggregate recitation over ``n`` examples, with per-example ``rows``."""

    strict_rate: float
    loose_rate: float
    mean_normalized_distance: float
    n: int
    strict_count: int
    loose_count: int
    prefix_tokens: int
    suffix_tokens: int
    loose_threshold: float
    rows: list[RecitationRow] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        """Headline numbers only (no rows)."""
        return {
            "strict_rate": self.strict_rate,
            "loose_rate": self.loose_rate,
            "mean_normalized_distance": self.mean_normalized_distance,
            "n": self.n,
        }

    def to_dict(self, *, include_rows: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strict_rate": self.strict_rate,
            "loose_rate": self.loose_rate,
            "mean_normalized_distance": self.mean_normalized_distance,
            "n": self.n,
            "strict_count": self.strict_count,
            "loose_count": self.loose_count,
            "prefix_tokens": self.prefix_tokens,
            "suffix_tokens": self.suffix_tokens,
            "loose_threshold": self.loose_threshold,
        }
        if include_rows:
            out["rows"] = [r.to_dict() for r in self.rows]
        return out


def score_recitation(generated: Sequence[int], gold: Sequence[int], loose_threshold: float = 0.75) -> RecitationRow:
    """Score one generation against its gold suffix (see the module docstring for definitions)."""
    gen = [int(t) for t in generated]
    ref = [int(t) for t in gold]
    d = int(Levenshtein.distance(gen, ref))
    nd = d / len(ref) if ref else float(d > 0)
    return RecitationRow(
        distance=d,
        length=len(ref),
        normalized_distance=nd,
        strict=d == 0,
        loose=(1.0 - nd) >= loose_threshold,
        generated=gen,
        gold=ref,
    )


def aggregate_recitation(
    rows: Sequence[RecitationRow],
    *,
    prefix_tokens: int = 64,
    suffix_tokens: int = 48,
    loose_threshold: float = 0.75,
) -> RecitationReport:
    """Rates over scored rows (all zero for an empty set)."""
    n = len(rows)
    strict = sum(r.strict for r in rows)
    loose = sum(r.loose for r in rows)
    return RecitationReport(
        strict_rate=strict / n if n else 0.0,
        loose_rate=loose / n if n else 0.0,
        mean_normalized_distance=sum(r.normalized_distance for r in rows) / n if n else 0.0,
        n=n,
        strict_count=strict,
        loose_count=loose,
        prefix_tokens=prefix_tokens,
        suffix_tokens=suffix_tokens,
        loose_threshold=loose_threshold,
        rows=list(rows),
    )


def _cache_of(output: Any) -> Any:
    """The KV cache of a forward output (``cache`` in transformers >= 5, else ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _cache_argument(model: nn.Module) -> str:
    """Name of the forward argument that takes the KV cache back."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def greedy_generate(
    model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int = 0
) -> list[list[int]]:
    """Greedy continuation of each prompt by ``max_new_tokens`` tokens (no early stop at EOS), in one
    left-padded batch with a KV cache. Positions count real tokens only, so padding does not change
    the result."""
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    device = model_device(model)
    batch = pad_batch(prompts, pad_id, side="left", device=device)
    mask, positions = batch.attention_mask, batch.position_ids
    out = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache_arg = _cache_argument(model)
    past = _cache_of(out)
    token = out.logits[:, -1, :].argmax(dim=-1)
    generated = [token]
    next_pos = positions[:, -1:] + 1
    for _ in range(max_new_tokens - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=token[:, None].to(device),
            attention_mask=mask,
            position_ids=next_pos,
            **{cache_arg: past},
            use_cache=True,
        )
        past = _cache_of(out)
        token = out.logits[:, -1, :].argmax(dim=-1)
        generated.append(token)
        next_pos = next_pos + 1
    stacked = torch.stack(generated, dim=1).cpu().tolist()
    return [list(map(int, row)) for row in stacked]


def prepare_pair(
    tokenizer: object | None, prefix: TextOrIds, suffix: TextOrIds, *, prefix_tokens: int, suffix_tokens: int
) -> tuple[list[int], list[int]]:
    """Token ids of one pair, truncated: last ``prefix_tokens`` of the prefix, first ``suffix_tokens``
    of the suffix. An empty prefix becomes the tokenizer's BOS (or EOS) token."""
    if (isinstance(prefix, str) or isinstance(suffix, str)) and tokenizer is None:
        raise ValueError("text pairs need a tokenizer")
    p = encode(tokenizer, prefix)[-prefix_tokens:] if prefix_tokens > 0 else []
    s = encode(tokenizer, suffix)[:suffix_tokens]
    if not p:
        start = getattr(tokenizer, "bos_token_id", None)
        if not isinstance(start, int):
            start = getattr(tokenizer, "eos_token_id", None)
        if not isinstance(start, int):
            raise ValueError("empty prefix and the tokenizer has no BOS/EOS token to start from")
        p = [start]
    return p, s


def evaluate_recitation(
    model: nn.Module,
    tokenizer: object | None,
    pairs: Sequence[tuple[TextOrIds, TextOrIds]],
    *,
    prefix_tokens: int = 64,
    suffix_tokens: int = 48,
    batch_size: int = 8,
    loose_threshold: float = 0.75,
    decode: bool = True,
) -> RecitationReport:
    """Greedy recitation of every pair's suffix from its prefix (see the module docstring).

    ``pairs`` holds ``(prefix, suffix)`` as text (tokenized with ``tokenizer``) or token-id lists.
    Examples are grouped by suffix length so each batch generates exactly what it needs.
    ``decode=True`` adds the generated and gold texts to each row (when a tokenizer is given).
    """
    prepared = [
        prepare_pair(tokenizer, p, s, prefix_tokens=prefix_tokens, suffix_tokens=suffix_tokens) for p, s in pairs
    ]
    pad_id = pad_token_id(tokenizer, model)
    order = sorted(range(len(prepared)), key=lambda i: (len(prepared[i][1]), len(prepared[i][0])))
    rows: list[RecitationRow | None] = [None] * len(prepared)
    with eval_mode(model):
        for group in chunks(order, batch_size):
            new_tokens = max(len(prepared[i][1]) for i in group)
            outputs = greedy_generate(model, [prepared[i][0] for i in group], new_tokens, pad_id=pad_id)
            for i, gen in zip(group, outputs, strict=True):
                prefix_ids, gold = prepared[i]
                row = score_recitation(gen[: len(gold)], gold, loose_threshold)
                row.index = i
                row.prefix_length = len(prefix_ids)
                if decode and tokenizer is not None:
                    row.generated_text = tokenizer.decode(row.generated)  # type: ignore[attr-defined]
                    row.gold_text = tokenizer.decode(row.gold)  # type: ignore[attr-defined]
                rows[i] = row
    return aggregate_recitation(
        [r for r in rows if r is not None],
        prefix_tokens=prefix_tokens,
        suffix_tokens=suffix_tokens,
        loose_threshold=loose_threshold,
    )
