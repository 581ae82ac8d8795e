"""pack_texts / pack_texts_masked / iter_batches: EOS between documents, budget, partial rows."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_tokenizer
from workers.curvature.calibration import count_tokens, iter_batches, pack_texts, pack_texts_masked


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def stream_of(tokenizer, texts: list[str]) -> list[int]:
    out: list[int] = []
    for t in texts:
        out += tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id]
    return out


TEXTS = ["the quick brown fox", "alice sends bob a letter", "numbers 0123 and letters abc", "paris weather"]


def test_documents_joined_with_eos_and_partial_row_dropped(tokenizer) -> None:
    stream = stream_of(tokenizer, TEXTS)
    ids = pack_texts(tokenizer, TEXTS, seq_len=8, max_tokens=10_000)
    n = len(stream) // 8
    assert ids.dtype == torch.long and ids.shape == (n, 8)
    assert ids.reshape(-1).tolist() == stream[: n * 8]
    assert int((ids == tokenizer.eos_token_id).sum()) == stream[: n * 8].count(tokenizer.eos_token_id) >= 2


def test_token_budget_cuts_the_stream(tokenizer) -> None:
    stream = stream_of(tokenizer, TEXTS)
    ids = pack_texts(tokenizer, TEXTS, seq_len=4, max_tokens=13)
    assert ids.reshape(-1).tolist() == stream[:12]
    consumed: list[str] = []

    def lazy():
        for t in TEXTS * 1000:
            consumed.append(t)
            yield t

    pack_texts(tokenizer, lazy(), seq_len=4, max_tokens=20)
    assert len(consumed) < 10  # stops reading documents once the budget is reached


def test_masked_variant_keeps_the_partial_row(tokenizer) -> None:
    stream = stream_of(tokenizer, TEXTS)
    ids, mask = pack_texts_masked(tokenizer, TEXTS, seq_len=8, max_tokens=10_000)
    n = -(-len(stream) // 8)
    assert ids.shape == mask.shape == (n, 8)
    assert ids.reshape(-1)[mask.reshape(-1).bool()].tolist() == stream
    assert int(mask.sum()) == len(stream) and bool((ids[mask == 0] == tokenizer.pad_token_id).all())
    assert count_tokens(ids, mask) == len(stream)


def test_short_corpus_and_bad_arguments(tokenizer) -> None:
    with pytest.raises(ValueError, match="fewer than one sequence of seq_len=512"):
        pack_texts(tokenizer, ["hi"], seq_len=512, max_tokens=1000)
    ids, mask = pack_texts_masked(tokenizer, ["hi"], seq_len=512, max_tokens=1000)
    assert ids.shape == (1, 512) and 0 < int(mask.sum()) < 512
    with pytest.raises(ValueError, match="seq_len >= 2"):
        pack_texts(tokenizer, TEXTS, seq_len=1, max_tokens=100)
    with pytest.raises(TypeError, match="str"):
        pack_texts(tokenizer, [b"bytes"], seq_len=4, max_tokens=100)  # type: ignore[list-item]


def test_iter_batches(tokenizer) -> None:
    ids = torch.arange(70).view(10, 7)
    batches = list(iter_batches(ids, 4))
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), ids)
    assert all(bool((b["attention_mask"] == 1).all()) for b in batches)
    mask = torch.ones_like(ids)
    mask[-1, 3:] = 0
    last = list(iter_batches(ids, 4, attention_mask=mask))[-1]
    assert torch.equal(last["attention_mask"], mask[8:])
    with pytest.raises(ValueError, match=r"attention_mask of shape \(10, 7\), got \(10, 6\)"):
        list(iter_batches(ids, 4, attention_mask=mask[:, :6]))
    with pytest.raises(ValueError, match=r"input_ids of shape \(n_seq, seq_len\)"):
        list(iter_batches(ids.view(-1), 4))
