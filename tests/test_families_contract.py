"""Contract test: the gateway and the worker give the same answer about a model's edit targets.

The gateway answers from ``config.json`` and the safetensors header of the saved model (no torch,
``service/model_inspect.py``); the worker answers from the loaded model
(``workers/curvature/targets.py``). Both read the one family table in ``contract/families.py``.
For each supported family and each module pattern — every MLP role, every module name the loaded
model has (norms, embeddings and containers included) and a set of globs — the answers must agree.
The families include an image classifier (ViT), whose checkpoint names transformers 5 renames on
load: the table's renames are checked against the loaded model's own weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForImageClassification, PreTrainedModel

from contract.families import ROLES, family_of, mlp_slot
from service.model_inspect import ModelInfo, inspect_model
from tests.tiny_models import FAMILIES, MLP_VARIANT_FAMILIES, save_tiny
from tests.vision_fixtures import save_tiny_vit
from workers.curvature.targets import TargetError, num_layers, resolve_targets

IMAGE_FAMILIES = ("vit",)
ALL_FAMILIES = FAMILIES + MLP_VARIANT_FAMILIES + IMAGE_FAMILIES
GLOBS = (
    "*",
    "*mlp*",
    "*.mlp.*",
    "*feed_forward*",
    "*.1.*",
    "*_proj",
    "*norm*",
    "*embed*",
    "*attn*",
    "*conv*",
    "lm_head",
    "embed_out",
    "model.norm",
    "transformer.ln_f",
    "*.weight",
    "model.layers.[01].*",
    "classifier",
    "*attention*",
    "*fc?",
    "vit.layers.*",
    "vit.encoder.*",  # the checkpoint's (transformers 4.x) names: not the loaded model's
    "*intermediate*",
    "*output.dense",
)


@pytest.fixture(scope="module", params=ALL_FAMILIES)
def saved(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelInfo, PreTrainedModel]:
    family = str(request.param)
    directory = tmp_path_factory.mktemp(family) / family
    if family in IMAGE_FAMILIES:
        model = AutoModelForImageClassification.from_pretrained(save_tiny_vit(directory, layers=3))
    else:
        model = AutoModelForCausalLM.from_pretrained(save_tiny(directory, family=family, layers=3))
    return inspect_model(directory), model


def _worker_modules(model: PreTrainedModel, pattern: str) -> list[str]:
    try:
        return sorted(t.name for t in resolve_targets(model, modules=[pattern]))
    except TargetError:
        return []


def _worker_roles(model: PreTrainedModel) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for role in ROLES:
        try:
            out[role] = [t.name for t in resolve_targets(model, projections=[role])]
        except TargetError:
            continue
    return out


def test_layers_and_roles_agree(saved: tuple[ModelInfo, PreTrainedModel]) -> None:
    info, model = saved
    assert info.num_layers == num_layers(model) == 3
    worker = _worker_roles(model)
    assert info.roles_available() == list(worker), (info.model_type, info.roles_available(), list(worker))
    for role, names in worker.items():
        assert [info.roles[i][role] for i in info.layers_with(role)] == names
    assert worker, f"{info.model_type}: no MLP role resolved"


def test_every_module_name_and_glob_agrees(saved: tuple[ModelInfo, PreTrainedModel]) -> None:
    info, model = saved
    patterns = [name for name, _ in model.named_modules() if name] + list(GLOBS)
    disagreements = {
        p: (sorted(info.match_modules(p)), _worker_modules(model, p))
        for p in patterns
        if sorted(info.match_modules(p)) != _worker_modules(model, p)
    }
    assert not disagreements, f"{info.model_type}: gateway vs worker differ on {disagreements}"
    # The sweep is not vacuous: both sides accept the MLP projections and refuse the final norm.
    assert info.match_modules("*") and any(info.match_modules(p) for p in ("*mlp*", "*feed_forward*"))
    norms = [name for name, _ in model.named_modules() if name.endswith(("norm", "ln_f", "final_layer_norm"))]
    assert norms and all(not info.match_modules(n) for n in norms), norms


def test_checkpoint_names_map_to_the_loaded_modules(saved: tuple[ModelInfo, PreTrainedModel]) -> None:
    """Oracle: transformers' own loading. Every 2-D checkpoint weight is, under the name the table
    gives it, the loaded model's module holding that very tensor; and an MLP projection has the same
    layer and role under its checkpoint name (what transformers 4.x loads) as under its loaded name."""
    info, model = saved
    family = family_of(info.model_type)
    assert family is not None
    checkpoint = {
        name.removesuffix(".weight"): tensor
        for f in sorted(Path(info.path).glob("*.safetensors"))
        for name, tensor in load_file(f).items()
        if name.endswith(".weight") and tensor.dim() == 2
    }
    loaded = dict(model.named_modules())
    renamed_slots = 0
    for name, tensor in checkpoint.items():
        target = family.loaded_name(name)
        assert target in loaded, f"{info.model_type}: {name} -> {target}, which the loaded model lacks"
        weight = loaded[target].weight
        assert torch.equal(weight.detach(), tensor), f"{info.model_type}: {name} is not {target}"
        slot, loaded_slot = mlp_slot(name), mlp_slot(target)
        assert (slot and (slot.layer, slot.role)) == (loaded_slot and (loaded_slot.layer, loaded_slot.role)), name
        renamed_slots += target != name and slot is not None
    if info.model_type in IMAGE_FAMILIES:  # the ViT checkpoint's MLP names all differ from the loaded ones
        assert renamed_slots == 2 * info.num_layers, renamed_slots


def test_image_classifier_kind_and_head(saved: tuple[ModelInfo, PreTrainedModel]) -> None:
    info, model = saved
    is_classifier = (model.config.architectures or [""])[0].endswith("ForImageClassification")
    assert info.kind == ("image_classifier" if is_classifier else "causal_lm"), info.kind
    if is_classifier:  # the head the worker sees is an editable module of the gateway's answer
        assert info.match_modules("classifier") == _worker_modules(model, "classifier") == ["classifier"]
