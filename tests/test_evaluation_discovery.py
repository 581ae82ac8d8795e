"""Discovery: windows planted in a tiny model (trained here, seconds) are found, nothing is found in an
untrained model or in text the model never saw, and duplicates are reported once."""

from __future__ import annotations

import random

import pytest
import torch

from tests.tiny_models import build_model
from workers.evaluation.discovery import candidate_windows, discover_memorized
from workers.evaluation.recitation import evaluate_recitation

VOCAB = 64
PLANT_LEN = 20


def _planted(seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, VOCAB) for _ in range(PLANT_LEN)] for _ in range(3)]


def _noise(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(2, VOCAB) for _ in range(n)]


@pytest.fixture(scope="module")
def memorizer():
    torch.manual_seed(0)
    model = build_model("llama", vocab_size=VOCAB, seed=0, hidden=48, layers=2, intermediate=96)
    planted = _planted()
    data = torch.tensor(planted)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):
        loss = model(input_ids=data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval()
    return model, planted


def test_candidate_windows_layout():
    assert candidate_windows(list(range(10)), prefix_tokens=4, suffix_tokens=3, stride=2) == [(0, 4), (2, 4)]
    assert candidate_windows(list(range(5)), prefix_tokens=4, suffix_tokens=3, stride=2) == [(0, 2)]
    assert candidate_windows(list(range(3)), prefix_tokens=4, suffix_tokens=3, stride=2) == []


def test_finds_planted_windows_and_only_those(memorizer):
    model, planted = memorizer
    rng = random.Random(1)
    # Each document: the planted sequence (which starts at position 0 during training) + unseen noise.
    # Another planted copy appears in a second document, and one document is noise only.
    docs = [p + _noise(rng, 12) for p in planted] + [planted[0] + _noise(rng, 5), _noise(rng, 40)]
    found = discover_memorized(model, None, docs, prefix_tokens=6, suffix_tokens=6, stride=2)
    assert found, "no planted window was discovered"
    for w in found:
        # Every discovered window lies inside its document's planted span.
        assert w.document in (0, 1, 2, 3)
        assert w.start + len(w.prefix_ids) + len(w.suffix_ids) <= PLANT_LEN
        source = planted[w.document if w.document < 3 else 0]
        assert w.prefix_ids + w.suffix_ids == source[w.start : w.start + 12]
    # Every planted sequence has its first window found.
    assert {w.document for w in found if w.start == 0} == {0, 1, 2}
    # Document 3 repeats document 0's planted sequence: deduplicated, counted twice.
    first = next(w for w in found if w.document == 0 and w.start == 0)
    assert first.occurrences == 2
    assert not any(w.document == 3 for w in found)
    # Consistency: every discovered pair is strictly recited by greedy generation.
    pairs = [(w.prefix_ids, w.suffix_ids) for w in found]
    report = evaluate_recitation(model, None, pairs, prefix_tokens=6, suffix_tokens=6)
    assert report.strict_rate == 1.0


def test_nothing_found_in_an_untrained_model():
    model = build_model("llama", vocab_size=VOCAB, seed=5, hidden=48, layers=2, intermediate=96)
    docs = [p + _noise(random.Random(2), 12) for p in _planted()]
    assert discover_memorized(model, None, docs, prefix_tokens=6, suffix_tokens=6, stride=1) == []


def test_text_documents_round_trip_to_pairs(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    # An untrained model recites nothing, but a 1-token suffix is sometimes guessed; the pair format holds.
    found = discover_memorized(model, tok, ["alice sends bob a letter"] * 2, prefix_tokens=2, suffix_tokens=1)
    for w in found:
        assert w.to_pair() == {"prefix": tok.decode(w.prefix_ids), "suffix": tok.decode(w.suffix_ids)}
