"""Perplexity: token-weighted exp(mean NLL), checked against a uniform model (perplexity = vocab size)
and against an independent computation from Hugging Face's own mean loss per sequence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.tiny_models import build_model, build_tokenizer
from workers.evaluation.perplexity import evaluate_perplexity, perplexity_of_sequences

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "alice sends bob a letter about the weather in paris and bob replies",
    "numbers like 0123456789",
    "a",
    "the lazy dog sleeps",
] * 3


class Uniform(nn.Module):
    """Equal logits for every token: every position costs log(V) nats."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    report = perplexity_of_sequences(Uniform(37), [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], batch_size=2)
    assert report.tokens == 2 + 1 + 4
    assert report.perplexity == pytest.approx(37.0)
    assert report.mean_nll == pytest.approx(math.log(37))


def test_matches_token_weighted_mean_of_hf_losses():
    tok = build_tokenizer()
    model = build_model("llama", vocab_size=len(tok), seed=1, hidden=32, layers=2, intermediate=64)
    seq_len = 16
    report = evaluate_perplexity(model, tok, TEXTS, seq_len=seq_len, max_tokens=10_000, batch_size=3)

    # Independent oracle: build the calibration-style stream by hand (EOS after each document), cut it,
    # and weight each sequence's HF mean loss (labels=input_ids) by its number of predicted tokens.
    stream: list[int] = []
    for text in TEXTS:
        stream += tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    pieces = [stream[s : s + seq_len] for s in range(0, len(stream), seq_len)]
    pieces = [p for p in pieces if len(p) >= 2]
    assert len(pieces[-1]) < seq_len  # the check covers a short final sequence (padding path)
    total, count = 0.0, 0
    with torch.no_grad():
        for p in pieces:
            ids = torch.tensor([p])
            loss = model(input_ids=ids, labels=ids).loss.item()
            total += loss * (len(p) - 1)
            count += len(p) - 1
    assert report.tokens == count
    assert report.sequences == len(pieces)
    assert report.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    # ... which differs from the (wrong) mean of per-sequence exponentials.
    assert report.sequences > 1


def test_max_tokens_budget_is_respected():
    tok = build_tokenizer()
    model = Uniform(len(tok))
    report = evaluate_perplexity(model, tok, TEXTS, seq_len=8, max_tokens=20)
    assert report.sequences == 3 and report.tokens == 7 + 7 + 3  # rows of 8, 8, 4 tokens
    assert report.perplexity == pytest.approx(len(tok))
