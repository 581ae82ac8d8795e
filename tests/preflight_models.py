"""Header-only checkpoints for the preflight tests: ``config.json`` plus a safetensors file whose
header declares full-size tensors but holds no data (the gateway reads headers only)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

OLMO2_7B = {
    "model_type": "olmo2",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 100352,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def llama_style_shapes(cfg: dict) -> dict[str, list[int]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        shapes.update(
            {
                f"{p}.self_attn.q_proj.weight": [h, h],
                f"{p}.self_attn.k_proj.weight": [kv, h],
                f"{p}.self_attn.v_proj.weight": [kv, h],
                f"{p}.self_attn.o_proj.weight": [h, h],
                f"{p}.mlp.gate_proj.weight": [i, h],
                f"{p}.mlp.up_proj.weight": [i, h],
                f"{p}.mlp.down_proj.weight": [h, i],
                f"{p}.input_layernorm.weight": [h],
                f"{p}.post_attention_layernorm.weight": [h],
            }
        )
    return shapes


def save_header_only(directory: Path, cfg: dict) -> Path:
    """A model directory the gateway can inspect: config.json + a header-only model.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    header: dict[str, dict] = {}
    offset = 0
    for name, shape in llama_style_shapes(cfg).items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return directory
