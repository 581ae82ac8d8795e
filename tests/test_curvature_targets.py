"""resolve_targets across model families; Conv1D (GPT-2) and GPT-NeoX naming round trips."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_models import build_model
from workers.curvature.edit import apply_edit, weight_matrix
from workers.curvature.eigen import eigenbases
from workers.curvature.factors import collect_factors
from workers.curvature.projection import project
from workers.curvature.selection import curvature_mask
from workers.curvature.targets import TargetError, resolve_targets

EXPECTED = {
    "llama": ("model.layers.{}.mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "mistral": ("model.layers.{}.mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "qwen2": ("model.layers.{}.mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "olmo": ("model.layers.{}.mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "olmo2": ("model.layers.{}.mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "gpt2": ("transformer.h.{}.mlp.", {"up": "c_fc", "down": "c_proj"}),
    "gpt_neox": ("gpt_neox.layers.{}.mlp.", {"up": "dense_h_to_4h", "down": "dense_4h_to_h"}),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_roles_resolve_on_every_family(family: str) -> None:
    model = build_model(family, vocab_size=40, layers=3, hidden=16, intermediate=24)
    prefix, roles = EXPECTED[family]
    targets = resolve_targets(model, layers=[0, -1], projections=list(roles))
    want = [prefix.format(layer) + roles[r] for layer in (0, 2) for r in ("gate", "up", "down") if r in roles]
    assert [t.name for t in targets] == want
    for t in targets:
        assert t.layer in (0, 2) and t.role in roles
        assert t.kind == ("conv1d" if family == "gpt2" else "linear")
        assert t.shape == ((16, 24) if t.role == "down" else (24, 16))
        assert tuple(weight_matrix(t, t.module(model)).shape) == t.shape
    keys = {t.role: t.input_key for t in targets if t.layer == 0}
    if "gate" in keys:
        assert keys["gate"] == keys["up"] != keys["down"]
    # round trip: the names resolve back to the same targets
    assert resolve_targets(model, modules=[t.name for t in targets]) == targets


def test_default_is_every_layer_gate_and_up() -> None:
    targets = resolve_targets(build_model("llama", vocab_size=40, layers=3))
    assert [(t.layer, t.role) for t in targets] == [(i, r) for i in range(3) for r in ("gate", "up")]


def test_globs_and_non_mlp_modules() -> None:
    model = build_model("llama", vocab_size=40, layers=3)
    targets = resolve_targets(model, modules=["model.layers.1.mlp.*_proj", "model.layers.0.self_attn.q_proj"])
    assert [t.name for t in targets] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.gate_proj",
        "model.layers.1.mlp.up_proj",
        "model.layers.1.mlp.down_proj",
    ]
    q = targets[0]
    assert q.layer is None and q.role is None and q.input_key == "model.layers.0.self_attn.q_proj:input"
    assert targets[1].input_key == targets[2].input_key


@pytest.mark.parametrize(
    ("family", "kwargs", "match"),
    [
        ("gpt2", {"projections": ["gate", "up"]}, r"\['gate'\] not found .* it has roles \['up', 'down'\]"),
        ("gpt_neox", {"projections": ["gate"]}, r"it has roles \['up', 'down'\]"),
        ("llama", {"layers": [4]}, r"layer 4 out of range: the model has 3 layers \(0\.\.2\)"),
        ("llama", {"layers": [-4]}, r"out of range"),
        ("llama", {"layers": []}, r"layers must not be empty \(the model has 3 layers"),
        ("llama", {"projections": ["ffn"]}, r"it has roles \['gate', 'up', 'down'\]"),
        ("llama", {"modules": ["model.layers.9.*"]}, r"matches no linear module; the model has: model\.layers\.0"),
        ("llama", {"modules": ["model.layers.0.mlp"]}, r"matches no linear module"),
    ],
)
def test_unknown_requests_list_what_exists(family: str, kwargs: dict, match: str) -> None:
    model = build_model(family, vocab_size=40, layers=3)
    with pytest.raises(TargetError, match=match):
        resolve_targets(model, **kwargs)
    assert issubclass(TargetError, ValueError)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_edit_saves_and_reloads_by_name(family: str, tmp_path) -> None:
    model = build_model(family, vocab_size=40, layers=2, seed=2)
    targets = resolve_targets(model, layers=[1], projections=["up", "down"])
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 40, (3, 10), generator=gen)}]
    eig = eigenbases(collect_factors(model, batches, targets))
    before = {t.name: weight_matrix(t, t.module(model)).detach().clone() for t in targets}
    biases = {t.name: t.module(model).bias.detach().clone() for t in targets}
    apply_edit(model, targets, eig, 0.6)
    for t in targets:  # the (out, in) view was projected, whatever the storage layout
        g, a = eig[t.name]
        want = project(before[t.name], g.vectors, a.vectors, curvature_mask(g.values, a.values, 0.6))
        torch.testing.assert_close(weight_matrix(t, t.module(model)), want)
        assert torch.equal(t.module(model).bias, biases[t.name])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    again = resolve_targets(reloaded, modules=[t.name for t in targets])
    assert again == targets
    for t in targets:
        assert torch.equal(t.module(reloaded).weight, t.module(model).weight)
