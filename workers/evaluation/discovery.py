"""Discovery: find the windows of candidate documents that a model recites.

A window is ``prefix_tokens`` tokens of prefix followed by ``suffix_tokens`` tokens of suffix. It is
*memorized* when, teacher-forced on the window alone, the model's argmax next token equals the gold
token at every suffix position — which is exactly the condition for greedy generation from the prefix
to reproduce the suffix, so every discovered window is strictly recited by ``evaluate_recitation``
(up to floating-point ties).

Windows start every ``stride`` tokens (default: ``suffix_tokens``). A document shorter than one full
window is tested once, with everything before its last ``suffix_tokens`` tokens as prefix (at least
``min_prefix_tokens``). Windows with identical token content are tested and reported once
(deduplicated across and within documents and batches), with the number of times they occurred.

A window is identified by its token ids, and ``to_pair`` hands those ids on: decoding a window
and tokenizing the text again need not give the same ids back (a byte-level BPE window can start or
end inside a multibyte character), so the text (``prefix`` / ``suffix``) is for display only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from workers.evaluation.batching import chunks, eval_mode, model_device, pad_batch, pad_token_id
from workers.evaluation.packing import encode

_WindowKey = tuple[tuple[int, ...], tuple[int, ...]]  # (prefix ids, suffix ids)


@dataclass
class DiscoveredWindow:
    """A recited window: where it was first found, its tokens and (when a tokenizer was given) text."""

    document: int
    start: int
    prefix_ids: list[int]
    suffix_ids: list[int]
    prefix: str | None = None
    suffix: str | None = None
    occurrences: int = 1

    def to_pair(self) -> dict[str, Any]:
        """A recitation-set line ``{"prefix": ids, "suffix": ids}``: the exact token ids that were
        checked (``evaluate_recitation`` and ``evaluation.recitation.pairs`` take id lists), never
        the decoded text, which may tokenize differently."""
        return {"prefix": list(self.prefix_ids), "suffix": list(self.suffix_ids)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidate_windows(
    ids: Sequence[int], *, prefix_tokens: int, suffix_tokens: int, stride: int, min_prefix_tokens: int = 1
) -> list[tuple[int, int]]:
    """``(start, prefix_length)`` of every window tested in one tokenized document."""
    n = len(ids)
    width = prefix_tokens + suffix_tokens
    if n >= width:
        return [(s, prefix_tokens) for s in range(0, n - width + 1, stride)]
    if n - suffix_tokens >= min_prefix_tokens:
        return [(0, n - suffix_tokens)]
    return []


def discover_memorized(
    model: nn.Module,
    tokenizer: object | None,
    documents: Sequence[str | Sequence[int]],
    *,
    prefix_tokens: int = 64,
    suffix_tokens: int = 48,
    stride: int | None = None,
    min_prefix_tokens: int = 1,
    batch_size: int = 8,
    max_windows: int | None = None,
) -> list[DiscoveredWindow]:
    """Windows of ``documents`` (text or token ids) that ``model`` recites; see the module docstring.
    ``max_windows`` caps how many candidate windows are tested (in document order)."""
    if prefix_tokens < 1 or suffix_tokens < 1:
        raise ValueError("prefix_tokens and suffix_tokens must be >= 1")
    step = stride or suffix_tokens
    if step < 1:
        raise ValueError("stride must be >= 1")
    candidates: list[tuple[int, int, list[int], list[int]]] = []
    for d, doc in enumerate(documents):
        ids = encode(tokenizer, doc)
        for start, plen in candidate_windows(
            ids,
            prefix_tokens=prefix_tokens,
            suffix_tokens=suffix_tokens,
            stride=step,
            min_prefix_tokens=min_prefix_tokens,
        ):
            candidates.append((d, start, ids[start : start + plen], ids[start + plen : start + plen + suffix_tokens]))
    if max_windows is not None:
        candidates = candidates[:max_windows]

    # One test per distinct window (first occurrence in document order); every occurrence counted.
    unique: dict[_WindowKey, tuple[int, int, list[int], list[int]]] = {}
    counts: dict[_WindowKey, int] = {}
    for item in candidates:
        key = (tuple(item[2]), tuple(item[3]))
        unique.setdefault(key, item)
        counts[key] = counts.get(key, 0) + 1

    found: list[DiscoveredWindow] = []
    pad_id = pad_token_id(tokenizer, model)
    device = model_device(model)
    with eval_mode(model):
        for group in chunks(list(unique.items()), batch_size):
            batch = pad_batch([it[2] + it[3] for _, it in group], pad_id, side="right", device=device)
            pred = (
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
                .logits.argmax(dim=-1)
                .cpu()
            )
            for row, (key, (d, start, prefix, suffix)) in enumerate(group):
                p = len(prefix)
                guesses = pred[row, p - 1 : p - 1 + len(suffix)].tolist()
                if guesses != suffix:
                    continue
                window = DiscoveredWindow(
                    document=d, start=start, prefix_ids=prefix, suffix_ids=suffix, occurrences=counts[key]
                )
                if tokenizer is not None:
                    window.prefix = tokenizer.decode(prefix)  # type: ignore[attr-defined]
                    window.suffix = tokenizer.decode(suffix)  # type: ignore[attr-defined]
                found.append(window)
    return found
