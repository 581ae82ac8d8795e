"""Resolve which weight matrices of a Hugging Face causal LM an edit touches.

An ``EditTarget`` names one linear map (``nn.Linear`` or GPT-2's transposed ``Conv1D``) by its
full module name, with its decoder layer index and MLP role when it has them. Targets are chosen
by layer indices and roles (``gate``, ``up``, ``down``) or by explicit module names / fnmatch
globs; which module plays which role comes from the family table ``contract/families.py``, the
same one the gateway validates with. Requests naming something the model lacks raise
``TargetError`` listing what it has.

``input_key`` groups targets that read the same input tensor: ``gate`` and ``up`` of one layer
share it, so their K-FAC ``A`` factor is collected once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from contract.families import ROLES, mlp_slot

Kind = Literal["linear", "conv1d"]


class TargetError(ValueError):
    """A requested layer, role or module does not exist (message lists what does)."""


@dataclass(frozen=True)
class EditTarget:
    """One weight matrix to edit. ``in_features``/``out_features`` refer to ``W`` as (out, in)."""

    name: str
    layer: int | None
    role: str | None
    kind: Kind
    in_features: int
    out_features: int
    input_key: str

    def module(self, model: nn.Module) -> nn.Module:
        """The module this target names inside ``model``."""
        return model.get_submodule(self.name)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the weight as a linear map ``(out_features, in_features)``."""
        return (self.out_features, self.in_features)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def module_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` as a tensor (its storage layout: (out, in) Linear, (in, out) Conv1D)."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise TargetError(f"expected a {type(module).__name__} with a weight tensor, got {type(w).__name__}")
    return w


def _describe(name: str, module: nn.Module, layer: int | None, role: str | None, parent: str) -> EditTarget:
    if isinstance(module, nn.Linear):
        kind: Kind = "linear"
        out_f, in_f = module_weight(module).shape
    elif _is_conv1d(module):
        kind = "conv1d"
        in_f, out_f = module_weight(module).shape
    else:
        raise TargetError(f"module {name!r} is a {type(module).__name__}, expected nn.Linear or Conv1D")
    input_key = f"{parent}:input[gate,up]" if role in ("gate", "up") else f"{name}:input"
    return EditTarget(
        name=name,
        layer=layer,
        role=role,
        kind=kind,
        in_features=int(in_f),
        out_features=int(out_f),
        input_key=input_key,
    )


def _layer_mlp_modules(model: nn.Module) -> dict[tuple[int, str], tuple[str, nn.Module, str]]:
    """(layer, role) -> (module name, module, mlp parent name) for every recognised MLP projection."""
    found: dict[tuple[int, str], tuple[str, nn.Module, str]] = {}
    for name, module in model.named_modules():
        slot = mlp_slot(name)
        if slot is None or not (isinstance(module, nn.Linear) or _is_conv1d(module)):
            continue
        found[(slot.layer, slot.role)] = (name, module, slot.parent)
    return found


def available_roles(model: nn.Module) -> list[str]:
    """The MLP roles (``gate``, ``up``, ``down``, in that order) the model's decoder layers have."""
    found = {role for _, role in _layer_mlp_modules(model)}
    return [r for r in ROLES if r in found]


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers (from the config, else from the recognised MLP modules)."""
    cfg = getattr(model, "config", None)
    for attr in ("num_hidden_layers", "n_layer"):
        n = getattr(cfg, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    found = _layer_mlp_modules(model)
    if not found:
        raise TargetError("the model has no recognisable decoder-layer MLP projections")
    return 1 + max(layer for layer, _ in found)


def _target_of(model: nn.Module, name: str, found_by_name: dict[str, tuple[int, str, str]]) -> EditTarget:
    module = model.get_submodule(name)
    if name in found_by_name:
        layer, role, parent = found_by_name[name]
        return _describe(name, module, layer, role, parent)
    return _describe(name, module, None, None, name.rsplit(".", 1)[0] if "." in name else "")


def resolve_targets(
    model: nn.Module,
    *,
    layers: Sequence[int] | None = None,
    projections: Iterable[str] = ("gate", "up"),
    modules: Sequence[str] | None = None,
) -> list[EditTarget]:
    """Targets for ``layers`` x ``projections`` (default every layer), or for ``modules``.

    ``modules`` (exact names or fnmatch globs) replaces ``layers``/``projections``. Negative
    layer indices count from the end. Results are in model order, without duplicates.
    """
    found = _layer_mlp_modules(model)
    found_by_name = {name: (layer, role, parent) for (layer, role), (name, _, parent) in found.items()}
    if modules is not None:
        return _resolve_modules(model, list(modules), found_by_name)

    n = num_layers(model)
    roles = list(projections)
    if not roles:
        raise TargetError("projections must name at least one of gate, up, down")
    available_roles = sorted({role for _, role in found}, key=ROLES.index)
    unknown = [r for r in roles if r not in available_roles]
    if unknown:
        raise TargetError(
            f"projection role(s) {unknown} not found in {type(model).__name__}; it has roles {available_roles}"
        )
    if layers is None:
        idx = list(range(n))
    elif not layers:
        raise TargetError(f"layers must not be empty (the model has {n} layers; omit it for all)")
    else:
        idx = []
        for layer in layers:
            if not -n <= layer < n:
                raise TargetError(f"layer {layer} out of range: the model has {n} layers (0..{n - 1})")
            idx.append(layer % n)
    targets: list[EditTarget] = []
    seen: set[str] = set()
    for layer in sorted(set(idx)):
        for role in ROLES:  # model order within a layer: gate, up, down
            if role not in roles:
                continue
            if (layer, role) not in found:
                have = sorted(r for (lay, r) in found if lay == layer)
                raise TargetError(f"layer {layer} has no {role!r} projection; it has {have}")
            name, module, parent = found[(layer, role)]
            if name not in seen:
                seen.add(name)
                targets.append(_describe(name, module, layer, role, parent))
    return targets


def _resolve_modules(
    model: nn.Module, patterns: list[str], found_by_name: dict[str, tuple[int, str, str]]
) -> list[EditTarget]:
    if not patterns:
        raise TargetError("modules must not be empty")
    editable = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) or _is_conv1d(mod)]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [name for name in editable if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            sample = ", ".join(editable[:12]) + (f", ... ({len(editable)} in all)" if len(editable) > 12 else "")
            raise TargetError(f"module {pattern!r} matches no linear module; the model has: {sample}")
        chosen.update(hits)
    return [_target_of(model, name, found_by_name) for name in editable if name in chosen]


def weight_device(model: nn.Module, target: EditTarget) -> torch.device:
    """Device holding the target's weight (where its accumulators and edits live)."""
    return module_weight(target.module(model)).device
