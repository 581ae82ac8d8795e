"""What a saved model has — kind, layers, MLP projections, editable modules — read without torch.

The gateway validates ``edit.layers`` / ``edit.projections`` / ``edit.modules`` at submission
from ``config.json`` (``model_type``, ``num_hidden_layers`` / ``n_layer``) and the safetensors
headers (8-byte little-endian header length, then a JSON header naming every tensor with its
shape; sharded checkpoints through ``model.safetensors.index.json`` and each shard's header).
Which module plays which MLP role, which weights are editable linear maps, the names transformers
gives checkpoint modules on load and whether the model is a causal LM or an image classifier come
from the one family table ``contract/families.py`` that the worker's target resolution uses as well.
Checkpoints without safetensors fall back to that table's module names.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.families import ROLES, Family, Kind, family_of, is_linear_weight, match_modules, mlp_slot

_MAX_HEADER = 100 * 2**20
Shape = tuple[int, ...]


class ModelInspectError(ValueError):
    """The directory is not a readable Hugging Face model."""


@dataclass
class ModelInfo:
    path: Path
    model_type: str
    num_layers: int
    modules: list[str] = field(default_factory=list)  # editable linear module names (no ".weight")
    roles: dict[int, dict[str, str]] = field(default_factory=dict)  # layer -> role -> module name
    names_from: str = "safetensors"
    family: Family | None = None

    @property
    def kind(self) -> Kind:
        """What the model is for (the family table's; a model not in it is taken for a causal LM)."""
        return self.family.kind if self.family else "causal_lm"

    def roles_available(self) -> list[str]:
        found = {role for per_layer in self.roles.values() for role in per_layer}
        return [r for r in ROLES if r in found]

    def layers_with(self, role: str) -> list[int]:
        return sorted(i for i, per_layer in self.roles.items() if role in per_layer)

    def match_modules(self, pattern: str) -> list[str]:
        """Editable (linear) modules equal to ``pattern`` or matching it as a glob."""
        return match_modules(self.modules, pattern)


def read_safetensors_header(path: Path) -> dict[str, Shape]:
    """Tensor names and shapes in one ``.safetensors`` file, from its header only."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ModelInspectError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > _MAX_HEADER:
            raise ModelInspectError(f"{path.name} has an implausible safetensors header length {n}")
        try:
            header = json.loads(fh.read(n))
            return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelInspectError(f"{path.name} has an unreadable safetensors header: {exc}") from exc


def weight_shapes(model_dir: Path) -> tuple[dict[str, Shape | None], str] | None:
    """Every tensor name of the checkpoint with its shape (None: unknown), and where they came
    from; None if the checkpoint has no readable names."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelInspectError(f"{index.name} is not a valid checkpoint index: {exc}") from exc
        shapes: dict[str, Shape | None] = {}
        for shard in shards:
            shard_path = model_dir / str(shard)
            if Path(str(shard)).name != str(shard) or not shard_path.is_file():
                raise ModelInspectError(f"{index.name} names a shard {shard!r} that is not in the model directory")
            shapes.update(read_safetensors_header(shard_path))
        return {name: shapes.get(name) for name in weight_map}, index.name
    bin_index = model_dir / "pytorch_model.bin.index.json"
    if bin_index.is_file():
        try:
            return {name: None for name in json.loads(bin_index.read_text())["weight_map"]}, bin_index.name
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelInspectError(f"{bin_index.name} is not a valid checkpoint index: {exc}") from exc
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        found: dict[str, Shape | None] = {}
        for f in files:
            found.update(read_safetensors_header(f))
        return found, "safetensors"
    return None


def inspect_model(model_dir: Path) -> ModelInfo:
    """Read ``config.json`` and the weight names and shapes of the model in ``model_dir``."""
    cfg_path = model_dir / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError as exc:
        raise ModelInspectError("no config.json") from exc
    except ValueError as exc:
        raise ModelInspectError(f"config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelInspectError("config.json is not a JSON object")
    raw_text_cfg = config.get("text_config")
    text_cfg: dict[str, Any] = raw_text_cfg if isinstance(raw_text_cfg, dict) else {}
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
    family = family_of(model_type)
    info = ModelInfo(path=model_dir, model_type=model_type, num_layers=num_layers, family=family)
    found = weight_shapes(model_dir)
    if found is not None:
        shapes, info.names_from = found
        modules = {  # by the loaded model's names (transformers renames some checkpoint modules)
            family.loaded_name(n[: -len(".weight")]) if family else n[: -len(".weight")]
            for n, shape in shapes.items()
            if n.endswith(".weight") and is_linear_weight(n[: -len(".weight")], shape)
        }
        # The output head (an LM's lm_head, a classifier's classifier) is a linear module of every
        # model, even when tied to the embedding (then the checkpoint holds no tensor of its own for it).
        modules.add(family.output if family else "lm_head")
        info.modules = sorted(modules)
        for module in info.modules:
            slot = mlp_slot(module)
            if slot is not None:
                info.roles.setdefault(slot.layer, {})[slot.role] = module
        if not num_layers and info.roles:
            info.num_layers = max(info.roles) + 1
    else:
        info.names_from = "config"
        table = family or family_of("llama")
        assert table is not None
        for i in range(num_layers):
            info.roles[i] = {role: table.module(i, role) for role in table.roles}
        info.modules = sorted(m for per_layer in info.roles.values() for m in per_layer.values())
    return info
