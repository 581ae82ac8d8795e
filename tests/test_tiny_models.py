"""The offline tiny-model factory itself: every family round-trips through save/from_pretrained."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tiny_models import FAMILIES, save_tiny


@pytest.mark.parametrize("family", FAMILIES)
def test_family_roundtrip(tmp_path, family):
    d = save_tiny(tmp_path / family, family=family)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d)
    ids = tok("alice sends bob a letter", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "alice sends bob a letter"
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()
