"""Calibration images as the rows of a calibration stream (image-classifier jobs).

The curvature stages work on "rows": for a causal LM the packed token tensor ``(N, seq_len)``,
for an image classifier the images. ``ImageRows`` gives the images the few members those stages
use on the token tensor -- ``shape`` (rows, tokens per row), ``numel()`` (tokens), slicing by rows
(shards) -- so sharding, progress and the cache treat both alike; ``calibration_batches`` turns
either into the batches ``workers.curvature.collect_factors`` takes. The row index of an image is
its index in the calibration set, which keys its sampled label (``workers.curvature.labels``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from contract.settings import Settings
from contract.spec import ImageSource
from workers.curvature import iter_batches
from workers.pipeline.loading import LoadedModel
from workers.vision.images import ImageSet, fingerprint_images, image_batches, load_images


@dataclass(frozen=True)
class ImageRows:
    """An image set as calibration rows, and the tokens each image makes in the model."""

    images: ImageSet
    tokens_per_image: int

    def __post_init__(self) -> None:
        if self.tokens_per_image < 1:
            raise ValueError(f"expected tokens_per_image >= 1, got {self.tokens_per_image}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(images, tokens per image)``: the token tensor's ``(rows, seq_len)``."""
        return (len(self.images), self.tokens_per_image)

    def numel(self) -> int:
        """Token positions over all images (the factors' position count)."""
        return self.shape[0] * self.tokens_per_image

    def __getitem__(self, rows: slice) -> ImageRows:
        part = ImageSet(self.images.pixel_values[rows], self.images.labels[rows], self.images.label)
        return ImageRows(part, self.tokens_per_image)


CalibrationRows = torch.Tensor | ImageRows


def calibration_batches(rows: CalibrationRows, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of packed token rows or of images, ``batch_size`` rows at a time."""
    if isinstance(rows, ImageRows):
        return image_batches(rows.images, batch_size)
    return iter(iter_batches(rows, batch_size))


def tokens_per_image(config: object) -> int:
    """Patch tokens plus [CLS] of a ViT-style config: ``(image_size // patch_size)² + 1``."""
    image_size = getattr(config, "image_size", None)
    patch_size = getattr(config, "patch_size", None)
    if not isinstance(image_size, int) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"expected a config with integer image_size and patch_size, got {image_size}, {patch_size}")
    return (image_size // patch_size) ** 2 + 1


def load_calibration_images(source: ImageSource, settings: Settings, loaded: LoadedModel) -> tuple[ImageRows, str]:
    """``calibration.images`` read and preprocessed for ``loaded``'s model, and their fingerprint
    (the factor-cache corpus key); ``invalid_input`` errors name the field."""
    images = load_images(source, settings, "calibration.images", loaded.model_dir, loaded.model.config)
    return ImageRows(images, tokens_per_image(loaded.model.config)), fingerprint_images(images)
