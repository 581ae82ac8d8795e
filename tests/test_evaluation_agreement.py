"""Agreement (nDCG@k): hand-computed rankings, a loop-based oracle on random rankings, 1 for an
unchanged model and lower for a perturbed one."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.tiny_models import build_model, build_tokenizer
from workers.evaluation.agreement import (
    evaluate_agreement,
    ndcg_at_k,
    reference_topk,
    reference_topk_for_texts,
)


def _oracle(reference: list[int], candidate: list[int]) -> float:
    """Textbook nDCG: graded relevance K - r + 1 from the reference rank r (1-based), 0 if absent."""
    k = len(reference)
    rel = {tok: k - r for r, tok in enumerate(reference)}  # r is 0-based here: K - (r+1) + 1
    dcg = sum(rel.get(tok, 0) / math.log2(i + 2) for i, tok in enumerate(candidate))
    idcg = sum((k - i) / math.log2(i + 2) for i in range(k))
    return dcg / idcg


def test_hand_computed_cases():
    same = ndcg_at_k(torch.tensor([[4, 5]]), torch.tensor([[4, 5]]))
    swapped = ndcg_at_k(torch.tensor([[4, 5]]), torch.tensor([[5, 4]]))
    disjoint = ndcg_at_k(torch.tensor([[4, 5]]), torch.tensor([[6, 7]]))
    # K = 2: IDCG = 2/1 + 1/log2(3); swapped DCG = 1/1 + 2/log2(3).
    idcg = 2 + 1 / math.log2(3)
    assert same.item() == pytest.approx(1.0)
    assert swapped.item() == pytest.approx((1 + 2 / math.log2(3)) / idcg)
    assert disjoint.item() == 0.0
    # Only the reference's 2nd token, at rank 1: 1 / IDCG.
    assert ndcg_at_k(torch.tensor([[4, 5]]), torch.tensor([[5, 9]])).item() == pytest.approx(1 / idcg)


def test_matches_loop_oracle_on_random_rankings():
    rng = random.Random(0)
    refs, cands = [], []
    for _ in range(50):
        refs.append(rng.sample(range(15), 10))
        cands.append(rng.sample(range(15), 10))
    got = ndcg_at_k(torch.tensor(refs), torch.tensor(cands))
    want = torch.tensor([_oracle(r, c) for r, c in zip(refs, cands, strict=True)], dtype=torch.float64)
    assert torch.allclose(got, want)


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    model = build_model("llama", vocab_size=len(tok), seed=2, hidden=32, layers=2, intermediate=64)
    texts = ["the quick brown fox jumps over the lazy dog", "alice sends bob a letter about paris"] * 4
    return model, tok, texts


def test_unchanged_model_scores_one(tiny):
    model, tok, texts = tiny
    ref = reference_topk_for_texts(model, tok, texts, k=10, seq_len=16, batch_size=3)
    report = evaluate_agreement(model, ref)
    assert report.ndcg == pytest.approx(1.0)
    assert report.top1_agreement == 1.0 and report.topk_overlap == 1.0
    assert report.positions == sum(len(b) - 1 for b in _packed_lengths(tok, texts, 16))


def _packed_lengths(tok, texts, seq_len):
    stream: list[int] = []
    for t in texts:
        stream += tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id]
    return [stream[s : s + seq_len] for s in range(0, len(stream), seq_len)]


def test_perturbed_model_scores_lower_and_worse_with_more_noise(tiny):
    model, tok, texts = tiny
    ref = reference_topk_for_texts(model, tok, texts, k=10, seq_len=16)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = []
    try:
        for scale in (0.02, 0.5):
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(original[n] + scale * torch.randn(p.shape, generator=gen))
            scores.append(evaluate_agreement(model, ref).ndcg)
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(original[n])
    assert scores[0] < 1.0
    assert scores[1] < scores[0]
    assert evaluate_agreement(model, ref).ndcg == pytest.approx(1.0)  # restored


def test_accepts_a_tensor_of_input_ids(tiny):
    model, _, _ = tiny
    ids = torch.randint(2, 300, (5, 12), generator=torch.Generator().manual_seed(1))
    ref = reference_topk(model, ids, k=3, batch_size=2)
    assert ref.positions == 5 * 11
    assert evaluate_agreement(model, ref).ndcg == pytest.approx(1.0)
