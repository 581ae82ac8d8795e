"""What a saved model has — layers, MLP projections, module names — read without torch.

The gateway validates ``edit.layers`` / ``edit.projections`` / ``edit.modules`` at submission
from ``config.json`` (``model_type``, ``num_hidden_layers`` / ``n_layer``) and the safetensors
headers (8-byte little-endian header length, then a JSON header naming every tensor; sharded
checkpoints through ``model.safetensors.index.json``). Checkpoints without safetensors fall
back to the per-family naming table below.

Projection roles by family:

=========================================== ============ ================== ==================
family (``model_type``)                      gate         up                 down
=========================================== ============ ================== ==================
llama, mistral, qwen2, olmo, olmo2, ...      ``gate_proj`` ``up_proj``       ``down_proj``
gpt2                                         —            ``c_fc``           ``c_proj``
gpt_neox                                     —            ``dense_h_to_4h``  ``dense_4h_to_h``
=========================================== ============ ================== ==================
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

# role -> MLP module suffixes (within one decoder layer) that play it, across families.
ROLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "gate": ("mlp.gate_proj",),
    "up": ("mlp.up_proj", "mlp.c_fc", "mlp.dense_h_to_4h"),
    "down": ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h"),
}

# Fallback when the weight names cannot be read: module name templates per family.
_FAMILY_TEMPLATES: dict[str, dict[str, str]] = {
    **{
        t: {
            "gate": "model.layers.{i}.mlp.gate_proj",
            "up": "model.layers.{i}.mlp.up_proj",
            "down": "model.layers.{i}.mlp.down_proj",
        }
        for t in ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "gemma", "gemma2")
    },
    "gpt2": {"up": "transformer.h.{i}.mlp.c_fc", "down": "transformer.h.{i}.mlp.c_proj"},
    "gpt_neox": {"up": "gpt_neox.layers.{i}.mlp.dense_h_to_4h", "down": "gpt_neox.layers.{i}.mlp.dense_4h_to_h"},
}

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.(.+)$")
_MAX_HEADER = 100 * 2**20


class ModelInspectError(ValueError):
    """The directory is not a readable Hugging Face model."""


@dataclass
class ModelInfo:
    path: Path
    model_type: str
    num_layers: int
    modules: list[str] = field(default_factory=list)  # weight-bearing module names (no ".weight")
    roles: dict[int, dict[str, str]] = field(default_factory=dict)  # layer -> role -> module name
    names_from: str = "safetensors"

    def roles_available(self) -> list[str]:
        found = {role for per_layer in self.roles.values() for role in per_layer}
        return [r for r in ("gate", "up", "down") if r in found]

    def layers_with(self, role: str) -> list[int]:
        return sorted(i for i, per_layer in self.roles.items() if role in per_layer)

    def match_modules(self, pattern: str) -> list[str]:
        return [m for m in self.modules if m == pattern or fnmatchcase(m, pattern)]


def read_safetensors_names(path: Path) -> list[str]:
    """Tensor names in one ``.safetensors`` file, from its header only."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ModelInspectError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > _MAX_HEADER:
            raise ModelInspectError(f"{path.name} has an implausible safetensors header length {n}")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise ModelInspectError(f"{path.name} has an unreadable safetensors header: {exc}") from exc
    return [k for k in header if k != "__metadata__"]


def weight_names(model_dir: Path) -> tuple[list[str], str] | None:
    """All tensor names of the checkpoint, and where they came from; None if unknowable."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise ModelInspectError(f"{index_name} is not a valid checkpoint index: {exc}") from exc
            return list(weight_map), index_name
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        names: list[str] = []
        for f in files:
            names += read_safetensors_names(f)
        return names, "safetensors"
    return None


def inspect_model(model_dir: Path) -> ModelInfo:
    """Read ``config.json`` and the weight names of the model in ``model_dir``."""
    cfg_path = model_dir / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError as exc:
        raise ModelInspectError("no config.json") from exc
    except ValueError as exc:
        raise ModelInspectError(f"config.json is not valid JSON: {exc}") from exc
    text_cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    model_type = str(config.get("model_type", "unknown"))
    num_layers = next(
        (
            int(c[k])
            for c in (config, text_cfg)
            for k in ("num_hidden_layers", "n_layer", "num_layers")
            if isinstance(c.get(k), int)
        ),
        0,
    )
    info = ModelInfo(path=model_dir, model_type=model_type, num_layers=num_layers)
    found = weight_names(model_dir)
    if found is not None:
        names, info.names_from = found
        info.modules = sorted({n[: -len(".weight")] for n in names if n.endswith(".weight")})
        for module in info.modules:
            m = _LAYER_RE.search(module)
            if not m:
                continue
            layer, inner = int(m.group(1)), m.group(2)
            for role, suffixes in ROLE_SUFFIXES.items():
                if inner in suffixes:
                    info.roles.setdefault(layer, {})[role] = module
        if not num_layers and info.roles:
            info.num_layers = max(info.roles) + 1
    else:
        info.names_from = "config"
        templates = _FAMILY_TEMPLATES.get(model_type, _FAMILY_TEMPLATES["llama"])
        for i in range(num_layers):
            info.roles[i] = {role: t.format(i=i) for role, t in templates.items()}
        info.modules = sorted(m for per_layer in info.roles.values() for m in per_layer.values())
    return info
