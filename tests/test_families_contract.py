"""Contract test: the gateway and the worker give the same answer about a model's edit targets.

The gateway answers from ``config.json`` and the safetensors header of the saved model (no torch,
``service/model_inspect.py``); the worker answers from the loaded model
(``workers/curvature/targets.py``). Both read the one family table in ``contract/families.py``.
For each supported family and each module pattern — every MLP role, every module name the loaded
model has (norms, embeddings and containers included) and a set of globs — the answers must agree.
"""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, PreTrainedModel

from contract.families import ROLES
from service.model_inspect import ModelInfo, inspect_model
from tests.tiny_models import FAMILIES, MLP_VARIANT_FAMILIES, save_tiny
from workers.curvature.targets import TargetError, num_layers, resolve_targets

ALL_FAMILIES = FAMILIES + MLP_VARIANT_FAMILIES
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
)


@pytest.fixture(scope="module", params=ALL_FAMILIES)
def saved(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelInfo, PreTrainedModel]:
    family = str(request.param)
    directory = save_tiny(tmp_path_factory.mktemp(family) / family, family=family, layers=3)
    model = AutoModelForCausalLM.from_pretrained(directory)
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
