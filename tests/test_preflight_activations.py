"""The preflight's per-token activation and logits terms against what torch actually keeps.

Oracle: ``torch.autograd.graph.saved_tensors_hooks`` records every tensor autograd saves while a
tiny model runs forward with frozen weights and the graph starting at one decoder layer's input
(as ``collect_factors`` does); the bytes of the distinct storages that are not parameters or
buffers, for the graph cut at layer 0 minus cut at layer 1, are what one layer keeps. The
preflight's figure for one layer is ``activations(cut at 0) - activations(cut at 1)`` of the same
job. The measured process peaks are in ``bench/bench_preflight.py``; the model keeps two
hidden-size vectors per token above what autograd saves (transients and allocator slack measured
there), so the test bounds the ratio instead of asking for equality.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from contract.preflight import LOGITS_COPIES, Capacity, JobShape, TargetShape, estimate, model_dims
from tests.tiny_models import build_model

B, T = 2, 48


def _layers(model: Any) -> Any:
    return model.model.layers if hasattr(model, "model") else model.transformer.h


def saved_bytes(model: Any, cut: int) -> int:
    """Bytes autograd saves (new storages only) when the graph starts at layer ``cut``'s input."""
    for p in model.parameters():
        p.requires_grad_(False)
    fixed = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in fixed:
            storages[ptr] = max(storages.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    def start_graph(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return (args[0].detach().requires_grad_(True), *args[1:]), kwargs

    handle = _layers(model)[cut].register_forward_pre_hook(start_graph, with_kwargs=True)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=torch.randint(2, 300, (B, T), generator=torch.Generator().manual_seed(0)), use_cache=False)
    finally:
        handle.remove()
    return sum(storages.values())


def preflight_layer_bytes(model: Any, family: str) -> int:
    """The preflight's activation bytes of one decoder layer for this model and a B x T batch."""
    cfg = {**model.config.to_dict(), "model_type": family, "torch_dtype": "float32"}
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    dims = model_dims(cfg, shapes)
    job = JobShape("float32", B, T, B * T, 1024, 1, "float32", 1)
    target = TargetShape  # the captured rows of the target cancel in the difference
    at = [
        estimate(dims, [target(cut, dims.intermediate, dims.hidden)], job, Capacity()).memory["activations"]
        for cut in (0, 1)
    ]
    return at[0] - at[1]


@pytest.mark.parametrize(("family", "hidden", "intermediate"), [("llama", 64, 176), ("gpt2", 64, 256)])
def test_one_layer_of_activations_is_what_autograd_keeps(family: str, hidden: int, intermediate: int) -> None:
    model = build_model(family, vocab_size=300, hidden=hidden, intermediate=intermediate, layers=3, heads=4).float()
    oracle = saved_bytes(model, 0) - saved_bytes(model, 1)
    modelled = preflight_layer_bytes(model, family)
    assert oracle > 0
    # at most two hidden-size vectors per token above what autograd saves, never below it
    assert oracle <= modelled <= oracle + 2 * 4 * hidden * B * T + 4 * B * T * 8, (oracle, modelled)


def test_gated_and_plain_mlps_differ_by_two_mlp_vectors_per_token() -> None:
    cfg = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
           "vocab_size": 300, "torch_dtype": "float32"}  # fmt: skip
    job = JobShape("float32", B, T, B * T, 1024, 1, "float32", 1)
    t = [TargetShape(0, 256, 64)]
    gated = estimate(model_dims({**cfg, "model_type": "llama"}, {}), t, job, Capacity()).memory["activations"]
    plain = estimate(model_dims({**cfg, "model_type": "gpt2"}, {}), t, job, Capacity()).memory["activations"]
    layers_above = 2
    assert gated - plain == layers_above * B * T * 2 * 256 * 4


def test_a_logits_chunk_never_spans_two_sequences() -> None:
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 5000, "torch_dtype": "float32"}  # fmt: skip
    dims = model_dims(cfg, {})
    t = [TargetShape(1, 176, 64)]
    # 8 sequences of 128 positions: chunks of at most one sequence (128 rows), not 1024
    short = estimate(dims, t, JobShape("float32", 8, 128, 1024, 1024, 1, "float32", 1), Capacity())
    assert short.assumptions["logits_chunk_positions"] == 128
    assert short.memory["logits_chunk"] == LOGITS_COPIES * 4 * 128 * 5000 + 8 * 128
    long = estimate(dims, t, JobShape("float32", 1, 4096, 4096, 1024, 1, "float32", 1), Capacity())
    assert long.assumptions["logits_chunk_positions"] == 1024
