"""Recitation metric: hand-computed Levenshtein cases and batched greedy generation against a naive
one-example-at-a-time generation without a KV cache."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_model, build_tokenizer
from workers.evaluation.recitation import aggregate_recitation, evaluate_recitation, score_recitation


@pytest.mark.parametrize(
    ("generated", "gold", "distance", "normalized", "strict", "loose"),
    [
        ([5, 6, 7, 8], [5, 6, 7, 8], 0, 0.0, True, True),  # exact
        ([5, 6, 9, 8], [5, 6, 7, 8], 1, 0.25, False, True),  # one substitution: 1 - 1/4 = 0.75 >= 0.75
        ([5, 9, 7], [5, 6, 7], 1, 1 / 3, False, False),  # one substitution in 3: 0.667 < 0.75
        ([5, 6], [5, 6, 7, 8], 2, 0.5, False, False),  # shorter generation: two deletions
        ([5, 6, 7], [5, 6, 7, 8], 1, 0.25, False, True),  # one token short
        ([], [5, 6, 7, 8], 4, 1.0, False, False),  # empty generation
        ([], [], 0, 0.0, True, True),  # both empty
        ([6, 5, 7, 8], [5, 6, 7, 8], 2, 0.5, False, False),  # a swap is two edits for Levenshtein
    ],
)
def test_score_recitation_hand_computed(generated, gold, distance, normalized, strict, loose):
    row = score_recitation(generated, gold)
    assert row.distance == distance
    assert row.length == len(gold)
    assert row.normalized_distance == pytest.approx(normalized)
    assert row.strict is strict
    assert row.loose is loose


def test_loose_threshold_is_configurable():
    assert score_recitation([5, 9, 7], [5, 6, 7], loose_threshold=0.6).loose is True
    assert score_recitation([5, 6, 9, 8], [5, 6, 7, 8], loose_threshold=0.8).loose is False


def test_aggregate_rates():
    rows = [score_recitation([1, 2], [1, 2]), score_recitation([1, 3], [1, 2]), score_recitation([], [1, 2])]
    report = aggregate_recitation(rows)
    assert report.n == 3
    assert report.strict_rate == pytest.approx(1 / 3)
    assert report.loose_rate == pytest.approx(1 / 3)  # 1 - 1/2 = 0.5 < 0.75
    assert report.mean_normalized_distance == pytest.approx((0 + 0.5 + 1.0) / 3)
    d = report.to_dict()
    assert d["rows"][1]["distance"] == 1 and "rows" not in report.to_dict(include_rows=False)


def _naive_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Independent oracle: unbatched, no padding, no cache, full recompute per token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    model = build_model("llama", vocab_size=len(tok), seed=3, hidden=32, layers=2, intermediate=64)
    return model, tok


def test_batched_generation_matches_naive_oracle(tiny):
    model, tok = tiny
    prompts = [tok("the quick brown fox").input_ids, tok("alice").input_ids, tok("numbers like 0123").input_ids]
    golds = [_naive_greedy(model, p, n) for p, n in zip(prompts, (6, 4, 5), strict=True)]
    # Plant one substitution in the second example's gold and truncate the third's prefix.
    wrong = list(golds[1])
    wrong[2] = (wrong[2] + 1) % len(tok)
    pairs = [(prompts[0], golds[0]), (prompts[1], wrong), (prompts[2], golds[2])]
    report = evaluate_recitation(model, tok, pairs, batch_size=3)
    assert [r.distance for r in report.rows] == [0, 1, 0]
    assert report.strict_rate == pytest.approx(2 / 3)
    assert report.rows[1].generated == golds[1]
    # Same answer one example at a time (no padding at all).
    single = evaluate_recitation(model, tok, pairs, batch_size=1)
    assert [r.generated for r in single.rows] == [r.generated for r in report.rows]


def test_prefix_and_suffix_truncation(tiny):
    model, tok = tiny
    prompt = tok("the quick brown fox jumps over the lazy dog").input_ids
    last3 = prompt[-3:]
    gold = _naive_greedy(model, last3, 5)
    # prefix_tokens=3 keeps the last 3 prefix tokens; suffix_tokens=2 keeps the first 2 gold tokens.
    report = evaluate_recitation(model, tok, [(prompt, gold + [7, 7, 7])], prefix_tokens=3, suffix_tokens=2)
    row = report.rows[0]
    assert row.prefix_length == 3 and row.gold == gold[:2] and row.strict


def test_text_pairs_are_tokenized_without_special_tokens(tiny):
    model, tok = tiny
    prefix = "alice sends bob"
    gold_ids = _naive_greedy(model, tok(prefix, add_special_tokens=False).input_ids, 4)
    report = evaluate_recitation(model, tok, [(prefix, gold_ids)])
    assert report.strict_rate == 1.0
    assert report.rows[0].generated_text == tok.decode(gold_ids)
