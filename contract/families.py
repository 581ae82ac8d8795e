"""The model-family table: which module of a causal LM or image classifier plays which MLP role, in one place.

Used by both sides so they cannot disagree: the gateway (``service/model_inspect.py``) answers
from ``config.json`` and the safetensors header (tensor names and shapes, no torch); the worker
(``workers/curvature/targets.py``) answers from the loaded model. ``tests/test_families_contract.py``
checks, per family and per module pattern, that both answers are the same.

A decoder layer's MLP is ``<stack>.<i>.<mlp>.<child>`` with ``<mlp>`` one of ``MLP_CONTAINERS``
and ``<child>`` one of a role's projection names:

====================== ================================ ========= ============== ===============
family                 ``model_type``                   gate      up             down
====================== ================================ ========= ============== ===============
Llama-style (SwiGLU)   llama, mistral, qwen2, qwen3,    gate_proj up_proj        down_proj
                       olmo, olmo2, gemma, gemma2
GPT-2 (Conv1D)         gpt2                             —         c_fc           c_proj
GPT-NeoX               gpt_neox                         —         dense_h_to_4h  dense_4h_to_h
GPT-J                  gptj                             —         fc_in          fc_out
Phi                    phi                              —         fc1            fc2
LFM2 (w1/w3/w2)        lfm2                             w1        w3             w2
ViT (image classifier) vit                              —         fc1            fc2
====================== ================================ ========= ============== ===============

An *editable* module is a linear map: an ``nn.Linear`` or GPT-2's ``Conv1D`` (weight stored
``(in, out)``). Seen from a checkpoint that is a two-dimensional ``<module>.weight`` that is not
an embedding table (``EMBEDDING_CHILDREN``); 1-D norms and the 3-D convolutions of hybrid models
are not editable. A tied output head (``tie_word_embeddings``) has no tensor of its own in the
checkpoint but is a linear module of the loaded model, so the gateway adds it. An image
classifier's output projection is its ``classifier`` head (``Family.output``).

Module names are the loaded model's names under transformers 5, which renames some checkpoint
modules on load (``Family.renamed``: GPT-NeoX's ``embed_out`` → ``lm_head``; ViT's
``vit.encoder.layer.{i}.intermediate.dense`` → ``vit.layers.{i}.mlp.fc1``, ``output.dense`` →
``mlp.fc2`` and the attention's ``attention.attention.query`` / ``key`` / ``value`` /
``attention.output.dense`` → ``attention.q_proj`` / ``k_proj`` / ``v_proj`` / ``o_proj``); the
gateway maps the checkpoint's names through that table. transformers 4.x loads with the checkpoint
names, so ``mlp_slot`` knows an MLP projection by either name (same layer, same role); an
explicit ``edit.modules`` name is matched against the loaded (transformers 5) names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from typing import Literal

ROLES: tuple[str, ...] = ("gate", "up", "down")
Kind = Literal["causal_lm", "image_classifier"]
MLP_CONTAINERS: tuple[str, ...] = ("mlp", "feed_forward", "ffn")
# Module names (last component) of embedding tables: two-dimensional weights that are not linear maps.
EMBEDDING_CHILDREN: frozenset[str] = frozenset(
    {"embed_tokens", "wte", "wpe", "embed_in", "embed_positions", "word_embeddings", "position_embeddings"}
)


@dataclass(frozen=True)
class Rename:
    """transformers 5 loads checkpoint module ``source`` as ``target``. ``{i}`` in both stands for a
    layer index (a per-layer pattern); without it the rename is of one exact name."""

    source: str
    target: str

    def apply(self, name: str) -> str | None:
        """The loaded name of checkpoint module ``name``, or None if this rename does not apply."""
        m = _compiled(self.source).fullmatch(name)
        if m is None:
            return None
        return self.target.replace("{i}", m.group("i")) if "{i}" in self.source else self.target


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regular expression: literal text, ``{i}`` a layer index."""
    return re.compile(re.escape(pattern).replace(re.escape("{i}"), r"(?P<i>\d+)"))


@dataclass(frozen=True)
class Family:
    """One naming scheme: where the layers are and what their MLP projections are called."""

    name: str
    model_types: tuple[str, ...]
    stack: str  # module path of the decoder-layer list, e.g. "model.layers"
    mlp: str  # the MLP container inside a layer
    roles: dict[str, str] = field(hash=False)  # role -> projection child name
    conv1d: bool = False  # weights stored (in, out) (GPT-2's Conv1D)
    output: str = "lm_head"  # the output projection (a linear module, possibly tied)
    # checkpoint module names (or per-layer patterns) the loaded model knows by another name
    renamed: tuple[Rename, ...] = ()
    kind: Kind = "causal_lm"  # what the model is trained for: the calibration data it takes

    def module(self, layer: int, role: str) -> str:
        return f"{self.stack}.{layer}.{self.mlp}.{self.roles[role]}"

    def loaded_name(self, checkpoint_name: str) -> str:
        """The name transformers 5 gives checkpoint module ``checkpoint_name`` (first rename that applies)."""
        return next((t for r in self.renamed if (t := r.apply(checkpoint_name)) is not None), checkpoint_name)


_SWIGLU = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
FAMILIES: tuple[Family, ...] = (
    Family(
        "llama-style",
        ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "gemma", "gemma2"),
        "model.layers",
        "mlp",
        _SWIGLU,
    ),
    Family("gpt2", ("gpt2",), "transformer.h", "mlp", {"up": "c_fc", "down": "c_proj"}, conv1d=True),
    Family(
        "gpt_neox",
        ("gpt_neox",),
        "gpt_neox.layers",
        "mlp",
        {"up": "dense_h_to_4h", "down": "dense_4h_to_h"},
        renamed=(Rename("embed_out", "lm_head"),),  # older checkpoints (Pythia) name the head embed_out
    ),
    Family("gptj", ("gptj",), "transformer.h", "mlp", {"up": "fc_in", "down": "fc_out"}),
    Family("phi", ("phi",), "model.layers", "mlp", {"up": "fc1", "down": "fc2"}),
    Family("lfm2", ("lfm2",), "model.layers", "feed_forward", {"gate": "w1", "up": "w3", "down": "w2"}),
    Family(
        "vit",
        ("vit",),
        "vit.layers",
        "mlp",
        {"up": "fc1", "down": "fc2"},
        output="classifier",
        kind="image_classifier",
        renamed=(  # whole names: <i>.attention.output.dense is the attention's output, not the MLP's
            Rename("vit.encoder.layer.{i}.attention.attention.query", "vit.layers.{i}.attention.q_proj"),
            Rename("vit.encoder.layer.{i}.attention.attention.key", "vit.layers.{i}.attention.k_proj"),
            Rename("vit.encoder.layer.{i}.attention.attention.value", "vit.layers.{i}.attention.v_proj"),
            Rename("vit.encoder.layer.{i}.attention.output.dense", "vit.layers.{i}.attention.o_proj"),
            Rename("vit.encoder.layer.{i}.intermediate.dense", "vit.layers.{i}.mlp.fc1"),
            Rename("vit.encoder.layer.{i}.output.dense", "vit.layers.{i}.mlp.fc2"),
        ),
    ),
)
_RENAMES: tuple[Rename, ...] = tuple(r for f in FAMILIES for r in f.renamed)

# role -> every projection child name that plays it, across the families (order: table order).
ROLE_CHILDREN: dict[str, tuple[str, ...]] = {
    role: tuple(dict.fromkeys(f.roles[role] for f in FAMILIES if role in f.roles)) for role in ROLES
}
_CHILD_ROLE = {child: role for role, children in ROLE_CHILDREN.items() for child in children}
_LAYER_MLP = re.compile(r"^(?P<stack>.+)\.(?P<idx>\d+)\.(?P<mlp>" + "|".join(MLP_CONTAINERS) + r")\.(?P<child>\w+)$")


@dataclass(frozen=True)
class MlpSlot:
    """Where a module sits: decoder layer, MLP role, and the MLP container's name."""

    layer: int
    role: str
    parent: str


def family_of(model_type: str) -> Family | None:
    """The table row for a ``config.json`` ``model_type`` (None: not in the table)."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def mlp_slot(module_name: str) -> MlpSlot | None:
    """Layer and role of a layer's MLP projection named ``module_name``, else None. A checkpoint
    name that transformers 5 renames (what transformers 4.x loads, e.g. ViT's
    ``vit.encoder.layer.{i}.intermediate.dense``) has the slot of its loaded name."""
    loaded = next((t for r in _RENAMES if (t := r.apply(module_name)) is not None), module_name)
    m = _LAYER_MLP.match(loaded)
    if m is None or m.group("child") not in _CHILD_ROLE:
        return None
    return MlpSlot(int(m.group("idx")), _CHILD_ROLE[m.group("child")], module_name.rsplit(".", 1)[0])


def is_linear_weight(module_name: str, shape: tuple[int, ...] | None) -> bool:
    """Whether ``<module_name>.weight`` of this ``shape`` (None: unknown) is a linear map's weight."""
    if module_name.rsplit(".", 1)[-1] in EMBEDDING_CHILDREN:
        return False
    if shape is None:  # no shapes (a .bin index): norms are the 1-D weights we can recognise by name
        return not re.search(r"(norm|ln_\w+|ln)$", module_name)
    return len(shape) == 2


def default_roles(available: Iterable[str]) -> list[str]:
    """The projections an edit takes when the job names none: the MLP's input projections -- gate and
    up of a gated MLP (Llama-style, LFM2), up alone otherwise (GPT-2, GPT-NeoX, GPT-J, Phi, ViT)."""
    have = set(available)
    return ["gate", "up"] if {"gate", "up"} <= have else [r for r in ("up",) if r in have] or sorted(have)


def role_order(role: str) -> int:
    return ROLES.index(role)


def match_modules(names: list[str], pattern: str) -> list[str]:
    """The names equal to ``pattern`` or matching it as an fnmatch glob (case-sensitive)."""
    return [n for n in names if n == pattern or fnmatchcase(n, pattern)]
