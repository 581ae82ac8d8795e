"""Serialization of cache values: safetensors bytes (never pickle), checksummed with sha256."""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


def encode(tensors: dict[str, torch.Tensor]) -> bytes:
    """Tensors -> safetensors bytes (moved to CPU, made contiguous)."""
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def decode(blob: bytes) -> dict[str, torch.Tensor]:
    return st_load(blob)


def checksum(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
