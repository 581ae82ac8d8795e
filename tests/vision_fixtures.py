"""Tiny ViT image classifiers for tests: an untrained one (factor tests) and one that memorised flipped labels.

``tiny_vit`` builds a randomly initialised ``ViTForImageClassification`` (8x8 images, 5 tokens);
``save_tiny_vit`` saves another untrained one (16x16 images, 17 tokens) for the gateway tests.
``train_memorizing_vit`` trains, in the test run, a 16x16 ViT on synthetic class-template images
where 15% of the training labels are flipped to another class, until it predicts every training
label (flipped and clean) -- so the flipped ones are memorised -- and writes under a data root:

- ``train.npz``: every training image (``pixel_values``) with the noisy labels;
- ``memorized.npz``: only the flipped images, with their flipped labels;
- ``heldout.npz``: clean held-out images and their true labels;
- ``folder/<class>/<nnn>.png``: uint8 20x20 renderings of some held-out images, one folder per
  class (the model's label names, and ``3`` -- an index -- for the last class), and
  ``folder.npz`` with the same uint8 images (``images``) and labels in the tree's reading order.

The model is saved with ``save_pretrained`` beside a ``ViTImageProcessor`` (size 16), so raw
images go through the model's own processor. Everything is seeded; the global RNG is restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTForImageClassification

CLASSES = ("ant", "bee", "cat", "dog")
FOLDER_NAMES = ("ant", "bee", "cat", "3")  # the last class by index, the others by label name
IMAGE_SIZE = 16
FOLDER_SIZE = 20  # the PNGs are larger than the model's input: the processor resizes them
FLIP_SHARE = 0.15
NOISE = 0.3  # pixel noise around the class template: the clean task is easy, the flipped labels must be memorised
CHECK_EVERY = 20
MAX_EPOCHS = 400


def vit_config(
    *, image_size: int, hidden: int, layers: int, heads: int, intermediate: int, num_labels: int, **extra: Any
) -> ViTConfig:
    """A ViT config with 4x4 patches, RGB input and no dropout (``extra``: id2label / label2id ...)."""
    kwargs: dict[str, Any] = {"num_labels": num_labels, **extra}  # PretrainedConfig kwargs the ViTConfig stub lacks
    return ViTConfig(
        image_size=image_size,
        patch_size=4,
        num_channels=3,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kwargs,
    )


def tiny_vit(seed: int = 0, num_labels: int = 3) -> ViTForImageClassification:
    """A randomly initialised 2-layer ViT on 8x8x3 images (4 patches + [CLS]), eval mode."""
    config = vit_config(image_size=8, hidden=16, layers=2, heads=2, intermediate=32, num_labels=num_labels)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ViTForImageClassification(config)
    return model.eval()


# The saved tiny ViT of the gateway and family tests: 16x16 images (16 patches + [CLS] = 17 tokens),
# hidden 32, 2 heads, MLP 64, 3 labels. Its checkpoint holds the names transformers writes
# (``vit.encoder.layer.{i}.intermediate.dense`` ...), whatever names the installed version loads.
TINY_VIT: dict[str, int] = {
    "image_size": 16,
    "patch_size": 4,
    "hidden": 32,
    "heads": 2,
    "intermediate": 64,
    "num_labels": 3,
}


def save_tiny_vit(directory: Path, *, layers: int = 2, seed: int = 0) -> Path:
    """Write the tiny untrained ``ViTForImageClassification`` (``layers`` encoder layers) to ``directory``."""
    dims = {k: v for k, v in TINY_VIT.items() if k != "patch_size"}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ViTForImageClassification(vit_config(layers=layers, **dims))
    model.save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class VisionData:
    """Paths (``*_rel`` are relative to ``data_root``) and the label tensors of the trained fixture."""

    model_dir: Path
    data_root: Path
    train_rel: str
    memorized_rel: str
    heldout_rel: str
    folder_rel: str
    folder_npz_rel: str
    train_pixels: torch.Tensor  # (N, 3, 16, 16) float32, as written
    train_labels: torch.Tensor  # noisy (flipped where ``flipped``)
    clean_labels: torch.Tensor
    flipped: torch.Tensor  # indices into the training set
    heldout_pixels: torch.Tensor
    heldout_labels: torch.Tensor
    folder_images: np.ndarray  # (M, 20, 20, 3) uint8, in the tree's reading order
    folder_labels: torch.Tensor


def _synthetic(n: int, templates: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = templates.shape[0]
    labels = torch.randint(0, k, (n,), generator=gen)
    images = templates[labels] + NOISE * torch.randn(n, *templates.shape[1:], generator=gen)
    return images, labels


def _predict(model: ViTForImageClassification, pixels: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(pixel_values=pixels[i : i + 256]).logits.argmax(-1) for i in range(0, len(pixels), 256)])
    model.train()
    return out


def _train(model: ViTForImageClassification, pixels: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> int:
    """AdamW until every training label is predicted; returns the epochs run."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(1, MAX_EPOCHS + 1):
        order = torch.randperm(len(pixels), generator=gen)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(model(pixel_values=pixels[idx]).logits, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % CHECK_EVERY == 0 and bool((_predict(model, pixels) == labels).all()):
            return epoch
    raise RuntimeError(f"the tiny ViT did not memorise its training labels in {MAX_EPOCHS} epochs")


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Float (N, 3, 16, 16) in ViT normalisation -> uint8 (N, 20, 20, 3) renderings."""
    big = F.interpolate(pixels, size=(FOLDER_SIZE, FOLDER_SIZE), mode="bilinear", align_corners=False)
    as_bytes = ((big.clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8)
    return as_bytes.permute(0, 2, 3, 1).contiguous().numpy()


def _write_folder(root: Path, images: np.ndarray, labels: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """PNGs under ``root/<class folder>/``; returns the images and labels in reading order
    (sorted folder name, then file name)."""
    from PIL import Image

    rows: list[tuple[str, str, int, np.ndarray]] = []
    for i, (img, y) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = FOLDER_NAMES[y]
        (root / folder).mkdir(parents=True, exist_ok=True)
        name = f"{i:03d}.png"
        Image.fromarray(img).save(root / folder / name)
        rows.append((folder, name, y, img))
    rows.sort(key=lambda r: (r[0], r[1]))
    return np.stack([r[3] for r in rows]), torch.tensor([r[2] for r in rows], dtype=torch.int64)


def train_memorizing_vit(root: Path, seed: int = 0) -> VisionData:
    """Train the memorising ViT and write its model directory and data files under ``root``."""
    from transformers import ViTImageProcessor

    k = len(CLASSES)
    gen = torch.Generator().manual_seed(seed)
    templates = F.avg_pool2d(torch.randn(k, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen), 3, 1, 1) * 2
    train_pixels, clean = _synthetic(320, templates, gen)
    heldout_pixels, heldout_labels = _synthetic(400, templates, gen)
    flipped = torch.randperm(len(clean), generator=gen)[: int(FLIP_SHARE * len(clean))].sort().values
    noisy = clean.clone()
    noisy[flipped] = (clean[flipped] + torch.randint(1, k, (len(flipped),), generator=gen)) % k

    config = vit_config(
        image_size=IMAGE_SIZE,
        hidden=64,
        layers=4,
        heads=4,
        intermediate=256,
        num_labels=k,
        id2label=dict(enumerate(CLASSES)),
        label2id={c: i for i, c in enumerate(CLASSES)},
    )
    threads = torch.get_num_threads()
    try:
        # One thread: on a small shared machine, two threads of tiny matmuls oversubscribe (~8x slower).
        torch.set_num_threads(1)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = ViTForImageClassification(config)
            _train(model, train_pixels, noisy, gen)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(model_dir)

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.savez(data / "train.npz", pixel_values=train_pixels.numpy(), labels=noisy.numpy())
    np.savez(data / "memorized.npz", pixel_values=train_pixels[flipped].numpy(), labels=noisy[flipped].numpy())
    np.savez(data / "heldout.npz", pixel_values=heldout_pixels.numpy(), labels=heldout_labels.numpy())
    folder_images, folder_labels = _write_folder(data / "folder", _to_uint8(heldout_pixels[:24]), heldout_labels[:24])
    np.savez(data / "folder.npz", images=folder_images, labels=folder_labels.numpy())
    return VisionData(
        model_dir=model_dir,
        data_root=data,
        train_rel="train.npz",
        memorized_rel="memorized.npz",
        heldout_rel="heldout.npz",
        folder_rel="folder",
        folder_npz_rel="folder.npz",
        train_pixels=train_pixels,
        train_labels=noisy,
        clean_labels=clean,
        flipped=flipped,
        heldout_pixels=heldout_pixels,
        heldout_labels=heldout_labels,
        folder_images=folder_images,
        folder_labels=folder_labels,
    )
