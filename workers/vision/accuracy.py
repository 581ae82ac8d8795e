"""Classification accuracy of an image classifier on labelled image sets.

``accuracy`` is the share of images whose arg-max prediction equals their label (eval mode, no
gradients, on the model's device and dtype; the model's train/eval mode is restored).
``classification_metrics`` measures the memorised set (the labels the model was trained on, e.g.
flipped ones: an edit that forgets them lowers this) and the clean held-out set, with the fields
of ``contract.results.ClassificationMetrics``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.vision.images import ImageSet, image_batches


def accuracy(model: nn.Module, images: ImageSet, batch_size: int) -> float:
    """Share of ``images`` predicted as their label (``batch_size`` images per forward pass)."""
    if len(images) == 0:
        raise ValueError(f"expected at least one image in {images.label}")
    param = next(model.parameters())
    was_training = model.training
    correct = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in image_batches(images, batch_size):
                pixels = batch["pixel_values"].to(device=param.device, dtype=param.dtype)
                predicted = model(pixel_values=pixels).logits.argmax(dim=-1)
                correct += int((predicted.cpu() == batch["labels"]).sum())
    finally:
        model.train(was_training)
    return correct / len(images)


def classification_metrics(
    model: nn.Module, memorized: ImageSet | None, heldout: ImageSet | None, batch_size: int
) -> dict[str, Any]:
    """``{memorized_accuracy, heldout_accuracy, memorized_images, heldout_images}`` (an accuracy is
    ``None`` and its count 0 when the set is not given)."""
    out: dict[str, Any] = {}
    for name, images in (("memorized", memorized), ("heldout", heldout)):
        out[f"{name}_accuracy"] = None if images is None else accuracy(model, images, batch_size)
        out[f"{name}_images"] = 0 if images is None else len(images)
    return out
