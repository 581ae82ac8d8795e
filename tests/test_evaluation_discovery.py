"""Discovery: windows planted in a tiny model (trained here, seconds) are found, nothing is found in an
untrained model or in text the model never saw, duplicates are reported once with every occurrence
counted (also inside one batch), and windows keep their token ids (multibyte text)."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from tests.tiny_models import build_model, build_tokenizer
from workers.evaluation.discovery import candidate_windows, discover_memorized
from workers.evaluation.packing import encode
from workers.evaluation.recitation import evaluate_recitation, prepare_pair

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
        assert w.to_pair() == {"prefix": w.prefix_ids, "suffix": w.suffix_ids}
        assert (w.prefix, w.suffix) == (tok.decode(w.prefix_ids), tok.decode(w.suffix_ids))


MULTIBYTE = [
    "Zoë's café — naïve 東京 straße 😀 Ünïcödé façade",
    "Straße in München: Grüße aus Köln, 東京タワー und 🚀 zum Mond.",
    "plain ascii text, then ½ € ± × ÷ and a smiley 🙂 at the end",
]


class _Oracle(torch.nn.Module):
    """Teacher-forced oracle: at every position its argmax is the token that really follows, so every
    candidate window counts as recited. It isolates discovery's bookkeeping from any model."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        following = torch.roll(input_ids, -1, dims=1)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(following, self.vocab).float())


def _all_windows(tok, docs, prefix_tokens, suffix_tokens, stride):
    """Brute force: every candidate window's (prefix ids, suffix ids), one entry per occurrence."""
    out = []
    for doc in docs:
        ids = encode(tok, doc)
        for start, plen in candidate_windows(
            ids, prefix_tokens=prefix_tokens, suffix_tokens=suffix_tokens, stride=stride
        ):
            out.append((tuple(ids[start : start + plen]), tuple(ids[start + plen : start + plen + suffix_tokens])))
    return out


def test_multibyte_windows_keep_their_token_ids():
    """Byte-level BPE windows that start or end inside a multibyte character do not survive
    decode -> re-tokenize; the pair handed on must still be exactly the ids that were checked."""
    tok = build_tokenizer()
    found = discover_memorized(_Oracle(len(tok)), tok, MULTIBYTE, prefix_tokens=4, suffix_tokens=3, stride=1)
    windows = _all_windows(tok, MULTIBYTE, 4, 3, 1)
    assert len(found) == len(set(windows))
    broken_by_text = 0
    for w in found:
        assert w.prefix_ids + w.suffix_ids == encode(tok, MULTIBYTE[w.document])[w.start : w.start + 7]
        pair = w.to_pair()
        assert prepare_pair(tok, pair["prefix"], pair["suffix"], prefix_tokens=4, suffix_tokens=3) == (
            w.prefix_ids,
            w.suffix_ids,
        )
        text_ids = prepare_pair(tok, w.prefix, w.suffix, prefix_tokens=4, suffix_tokens=3)
        broken_by_text += text_ids != (w.prefix_ids, w.suffix_ids)
    # The corpus really exercises the failure: many windows do not round-trip through text.
    assert broken_by_text >= 10


def test_duplicates_inside_one_batch_are_counted():
    docs = [[5, 6, 7, 8, 9, 10] * 3, [5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 23, 24, 25]]
    windows = _all_windows(None, docs, 2, 2, 1)
    expected = Counter(windows)
    assert max(expected.values()) > 1
    for batch_size in (1, 3, 64):  # 64: every window in one batch
        found = discover_memorized(
            _Oracle(32), None, docs, prefix_tokens=2, suffix_tokens=2, stride=1, batch_size=batch_size
        )
        got = {(tuple(w.prefix_ids), tuple(w.suffix_ids)): w.occurrences for w in found}
        assert got == dict(expected), batch_size
        # each window is reported at its first occurrence in document order
        first = {}
        for d, doc in enumerate(docs):
            for start, _plen in candidate_windows(doc, prefix_tokens=2, suffix_tokens=2, stride=1):
                first.setdefault((tuple(doc[start : start + 2]), tuple(doc[start + 2 : start + 4])), (d, start))
        assert {(tuple(w.prefix_ids), tuple(w.suffix_ids)): (w.document, w.start) for w in found} == first


@pytest.mark.slow
def test_discovered_multibyte_windows_are_recited_from_their_pairs():
    """End to end on a model trained to memorize multibyte text: every discovered window, evaluated
    from ``to_pair()``, is strictly recited (the text round trip lost windows here)."""
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = build_model("llama", vocab_size=len(tok), seed=0, hidden=64, layers=2, intermediate=128)
    rows = [encode(tok, t) for t in MULTIBYTE]
    width = max(len(r) for r in rows)
    data = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
    labels = data.masked_fill(mask == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        loss = model(input_ids=data, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.005:
            break
    model.eval()
    found = discover_memorized(model, tok, MULTIBYTE, prefix_tokens=6, suffix_tokens=4, stride=1)
    assert len(found) >= 5, len(found)
    text_mismatch = sum(
        prepare_pair(tok, w.prefix, w.suffix, prefix_tokens=6, suffix_tokens=4) != (w.prefix_ids, w.suffix_ids)
        for w in found
    )
    assert text_mismatch > 0  # the old text pairs would have been re-tokenized differently
    pairs = [(w.to_pair()["prefix"], w.to_pair()["suffix"]) for w in found]
    report = evaluate_recitation(model, tok, pairs, prefix_tokens=6, suffix_tokens=4)
    assert report.strict_rate == 1.0
