"""A tiny randomly initialised ViT image classifier saved with ``save_pretrained``, for tests.

16x16 RGB images in 4x4 patches (16 patches + [CLS] = 17 tokens per image), hidden size 32,
2 heads, MLP width 64, 3 labels. The checkpoint holds the names transformers writes
(``vit.encoder.layer.{i}.intermediate.dense`` ...), whatever names the installed version loads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification

TINY_VIT = dict(
    image_size=16,
    patch_size=4,
    num_channels=3,
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=64,
    num_labels=3,
)


def save_tiny_vit(directory: Path, *, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny ``ViTForImageClassification`` (``layers`` encoder layers) to ``directory``."""
    torch.manual_seed(seed)
    model = ViTForImageClassification(ViTConfig(num_hidden_layers=layers, **TINY_VIT))  # type: ignore[arg-type]
    model.save_pretrained(directory)
    return directory
