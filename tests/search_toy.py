"""A second tiny memorizing model for the goal-directed search tests, trained in the test session.

The recipe of ``tests/test_curvature_behaviour.py`` (4-layer Llama, hidden 48: 16 planted random
12-token sequences recited verbatim + in-context copying of fresh random strings as the general
skill), saved as a Hugging Face directory with a word-level tokenizer whose token ``w<i>`` is id
``i`` (``<eos>`` is 0) — so the pipeline reads its data as plain text: forget pairs as token ids, retain and
calibration texts as space-separated ``w<i>`` words.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.test_curvature_behaviour import EOS, MEM, PREFIX, copy_rows, one_thread, planted_rows, train_toy

V = 64


def word(i: int) -> str:
    return "<eos>" if i == EOS else "<unk>" if i == 1 else f"w{i}"


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word(i): i for i in range(V)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", bos_token="<eos>", pad_token="<eos>", unk_token="<unk>"
    )


def words(row: torch.Tensor) -> str:
    return " ".join(word(int(t)) for t in row)


def build_toy(directory: Path, seed: int) -> dict[str, object]:
    """Train and save the toy under ``directory/model``; write ``forget.jsonl``, ``retain.txt`` and
    ``calibration.txt`` beside it. Returns the planted sequences' pairs."""
    with one_thread():
        toy = train_toy(seed=seed)
    model_dir = directory / "model"
    toy.model.save_pretrained(model_dir, safe_serialization=True)
    word_tokenizer().save_pretrained(model_dir)
    rows = planted_rows(toy.planted)
    pairs = [
        {"prefix": [MEM, *map(int, p[:PREFIX])], "suffix": list(map(int, p[PREFIX:]))} for p in toy.planted.tolist()
    ]
    (directory / "forget.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    retain = copy_rows(96, torch.Generator().manual_seed(1000 + seed))
    (directory / "retain.txt").write_text("\n\n".join(words(r) for r in retain))
    calib = torch.cat([copy_rows(256, torch.Generator().manual_seed(7)), rows])
    (directory / "calibration.txt").write_text("\n\n".join(words(r) for r in calib))
    return {"pairs": pairs, "model": toy.model}
