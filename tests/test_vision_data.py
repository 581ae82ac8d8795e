"""Image sets for image classifiers (``workers.vision``): loading .npz files and class-folder trees,
preprocessing raw images, refusing bad input with ``PipelineError`` naming the field, and accuracy.

Oracles: the tensors the fixture wrote, preprocessing re-done here with PIL and numpy, the model's
own logits counted by hand, and the fixture's construction (every training label was memorised,
so the flipped images are never predicted as their clean class).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageClassification, ViTConfig

from contract.results import ClassificationMetrics
from contract.settings import Settings
from contract.spec import ImageSource
from tests.vision_fixtures import CLASSES, VisionData
from workers.pipeline.errors import PipelineError
from workers.vision.accuracy import accuracy, classification_metrics
from workers.vision.images import ImageSet, fingerprint_images, image_batches, load_images

FIELD = "calibration.images"


def _settings(root: Path) -> Settings:
    return Settings(device="cpu", data_root=root)


def _load(data: VisionData, rel: str, max_images: int = 50_000, model_dir: Path | None = None) -> ImageSet:
    config = AutoConfig.from_pretrained(data.model_dir)
    source = ImageSource(path=rel, max_images=max_images)
    return load_images(source, _settings(data.data_root), FIELD, model_dir or data.model_dir, config)


def _vit_default(images: np.ndarray, size: int = 16) -> torch.Tensor:
    """Independent ViT preprocessing: PIL bilinear resize, [0, 1], (x - 0.5) / 0.5, channels first."""
    out = []
    for img in images:
        resized = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
        out.append(torch.from_numpy((resized / 255.0 - 0.5) / 0.5).permute(2, 0, 1))
    return torch.stack(out).float()


# --- loading ------------------------------------------------------------------------------------


def test_npz_pixel_values_are_read_as_written(vision_data: VisionData) -> None:
    train = _load(vision_data, vision_data.train_rel)
    assert train.label == FIELD
    assert train.pixel_values.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.equal(train.pixel_values, vision_data.train_pixels)
    assert torch.equal(train.labels, vision_data.train_labels)
    first = _load(vision_data, vision_data.train_rel, max_images=10)
    assert torch.equal(first.pixel_values, vision_data.train_pixels[:10])
    assert torch.equal(first.labels, vision_data.train_labels[:10])


def test_folder_tree_equals_the_npz_images_path(vision_data: VisionData) -> None:
    tree = _load(vision_data, vision_data.folder_rel)
    npz = _load(vision_data, vision_data.folder_npz_rel)
    # Classes by label name ('ant', 'bee', 'cat') and by index ('3' is 'dog'), in reading order.
    assert torch.equal(tree.labels, vision_data.folder_labels)
    names = [CLASSES[y] for y in tree.labels.tolist()]
    assert names == sorted(names, key=lambda c: "3" if c == "dog" else c)  # sorted folder names: '3' first
    assert torch.equal(tree.pixel_values, npz.pixel_values)  # PNG round trip is lossless
    assert torch.equal(npz.labels, vision_data.folder_labels)
    # The saved processor (size 16, mean = std = 0.5) resized the 20x20 renderings.
    assert tree.pixel_values.shape == (len(vision_data.folder_labels), 3, 16, 16)
    torch.testing.assert_close(tree.pixel_values, _vit_default(vision_data.folder_images), atol=1e-5, rtol=0)
    first = _load(vision_data, vision_data.folder_rel, max_images=5)
    assert torch.equal(first.pixel_values, tree.pixel_values[:5])


def test_without_a_processor_config_raw_images_get_vits_defaults(vision_data: VisionData, tmp_path: Path) -> None:
    bare = tmp_path / "bare-model"
    shutil.copytree(vision_data.model_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    npz = _load(vision_data, vision_data.folder_npz_rel, model_dir=bare)
    torch.testing.assert_close(npz.pixel_values, _vit_default(vision_data.folder_images), atol=1e-5, rtol=0)


@pytest.mark.parametrize("processor", [True, False])
def test_raw_images_are_channels_last_even_when_three_pixels_tall(processor: bool, tmp_path: Path) -> None:
    from transformers import ViTImageProcessor

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if processor:
        ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(model_dir)
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "tall.npz", images=images, labels=_labels())
    got = load_images(ImageSource(path="tall.npz"), _settings(tmp_path), FIELD, model_dir, _config())
    torch.testing.assert_close(got.pixel_values, _vit_default(images), atol=1e-5, rtol=0)
    assert torch.equal(got.labels, torch.from_numpy(_labels()))


def test_batches_cover_the_set_in_order_and_the_fingerprint_sees_every_value(vision_data: VisionData) -> None:
    train = _load(vision_data, vision_data.train_rel)
    batches = list(image_batches(train, 64 + 7))
    assert [len(b["labels"]) for b in batches] == [71, 71, 71, 71, 36]
    assert torch.equal(torch.cat([b["pixel_values"] for b in batches]), train.pixel_values)
    assert torch.equal(torch.cat([b["labels"] for b in batches]), train.labels)
    with pytest.raises(ValueError, match="batch_size"):
        next(image_batches(train, 0))

    fp = fingerprint_images(train)
    assert fp == fingerprint_images(_load(vision_data, vision_data.train_rel))
    nudged = train.pixel_values.clone()
    nudged[3, 1, 2, 3] = torch.nextafter(nudged[3, 1, 2, 3], torch.tensor(10.0))
    relabelled = train.labels.clone()
    relabelled[5] = (relabelled[5] + 1) % 4
    assert fingerprint_images(ImageSet(nudged, train.labels, "x")) != fp
    assert fingerprint_images(ImageSet(train.pixel_values, relabelled, "x")) != fp
    assert fingerprint_images(ImageSet(train.pixel_values[:-1], train.labels[:-1], "x")) != fp


# --- accuracy -----------------------------------------------------------------------------------


def _count_correct(model: torch.nn.Module, images: ImageSet) -> int:
    correct = 0
    with torch.no_grad():
        for i in range(len(images)):
            logits = model(pixel_values=images.pixel_values[i : i + 1]).logits[0]
            correct += int(int(logits.argmax()) == int(images.labels[i]))
    return correct


def test_accuracy_is_the_share_predicted_as_labelled(vision_data: VisionData) -> None:
    model = AutoModelForImageClassification.from_pretrained(vision_data.model_dir).eval()
    memorized = _load(vision_data, vision_data.memorized_rel)
    heldout = _load(vision_data, vision_data.heldout_rel)
    assert len(memorized) == len(vision_data.flipped)

    want = _count_correct(model, heldout) / len(heldout)
    model.train()
    assert accuracy(model, heldout, 7) == pytest.approx(want, abs=1e-12)
    assert model.training  # mode restored
    assert accuracy(model, heldout, 1000) == pytest.approx(want, abs=1e-12)
    assert 0.0 < want < 1.0  # the held-out set is not trivially all right or all wrong

    # The model memorised every flipped label, so none of those images is predicted as its clean class.
    assert accuracy(model, memorized, 16) == 1.0
    clean = ImageSet(memorized.pixel_values, vision_data.clean_labels[vision_data.flipped], "clean")
    assert accuracy(model, clean, 16) == 0.0

    metrics = classification_metrics(model, memorized, heldout, 32)
    assert metrics == {
        "memorized_accuracy": 1.0,
        "heldout_accuracy": pytest.approx(want, abs=1e-12),
        "memorized_images": len(memorized),
        "heldout_images": len(heldout),
    }
    ClassificationMetrics(**metrics)  # the contract's fields
    only_heldout = classification_metrics(model, None, heldout, 32)
    assert only_heldout["memorized_accuracy"] is None and only_heldout["memorized_images"] == 0


# --- bad input ----------------------------------------------------------------------------------


def _config() -> ViTConfig:
    labels: dict[str, Any] = {
        "num_labels": 4,
        "id2label": dict(enumerate(CLASSES)),
        "label2id": {c: i for i, c in enumerate(CLASSES)},
    }
    return ViTConfig(image_size=16, patch_size=4, **labels)


def _npz(**arrays: np.ndarray) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        np.savez(root / "bad.npz", **arrays)  # type: ignore[arg-type]
        return "bad.npz"

    return write


def _pixels(n: int = 4, shape: tuple[int, ...] = (3, 16, 16)) -> np.ndarray:
    return np.zeros((n, *shape), dtype=np.float32)


def _labels(*values: int) -> np.ndarray:
    return np.array(values or (0, 1, 2, 3), dtype=np.int64)


def _tree(folders: dict[str, bytes | None]) -> Callable[[Path], str]:
    """A class-folder tree: folder name -> PNG bytes to write (None: a valid 16x16 PNG)."""

    def write(root: Path) -> str:
        (root / "tree").mkdir()
        for name, content in folders.items():
            (root / "tree" / name).mkdir(parents=True)
            if content is None:
                Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(root / "tree" / name / "a.png")
            else:
                (root / "tree" / name / "a.png").write_bytes(content)
        return "tree"

    return write


def _write(name: str, content: bytes) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        (root / name).write_bytes(content)
        return name

    return write


def _escaping_link(root: Path) -> str:
    outside = root.parent / "outside.npz"
    np.savez(outside, pixel_values=_pixels(), labels=_labels())
    (root / "link.npz").symlink_to(outside)
    return "link.npz"


def _escaping_image(root: Path) -> str:
    _tree({"ant": None})(root)
    outside = root.parent / "outside.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(outside)
    (root / "tree" / "ant" / "b.png").symlink_to(outside)
    return "tree"


BAD: dict[str, tuple[Callable[[Path], str], str, str]] = {
    "pixel shape": (_npz(pixel_values=_pixels(shape=(3, 8, 8)), labels=_labels()), "invalid_input",
                    "expected pixel_values of shape (N, 3, 16, 16), got (4, 3, 8, 8)"),
    "pixel channels": (_npz(pixel_values=_pixels(shape=(1, 16, 16)), labels=_labels()), "invalid_input",
                       "expected pixel_values of shape (N, 3, 16, 16), got (4, 1, 16, 16)"),
    "integer pixels": (_npz(pixel_values=_pixels().astype(np.int32), labels=_labels()), "invalid_input",
                       "expected float pixel_values"),
    "nan pixels": (_npz(pixel_values=np.full((4, 3, 16, 16), np.nan, np.float32), labels=_labels()),
                   "invalid_input", "pixel_values[0] is not finite"),
    "label too big": (_npz(pixel_values=_pixels(), labels=_labels(0, 1, 4, 2)), "invalid_input",
                      "labels[2] = 4 is out of range: the model has 4 labels (0..3)"),
    "negative label": (_npz(pixel_values=_pixels(), labels=_labels(0, -1, 1, 2)), "invalid_input",
                       "labels[1] = -1 is out of range"),
    "float labels": (_npz(pixel_values=_pixels(), labels=np.zeros(4, np.float32)), "invalid_input",
                     "expected integer labels"),
    "label count": (_npz(pixel_values=_pixels(), labels=_labels(0, 1, 2)), "invalid_input",
                    "expected one label per image"),
    "no labels": (_npz(pixel_values=_pixels()), "invalid_input", "the .npz has no 'labels' array"),
    "both kinds": (_npz(pixel_values=_pixels(), images=np.zeros((4, 16, 16, 3), np.uint8), labels=_labels()),
                   "invalid_input", "exactly one of 'pixel_values' or 'images'"),
    "float images": (_npz(images=np.zeros((4, 16, 16, 3), np.float32), labels=_labels()), "invalid_input",
                     "expected uint8 images"),
    "image channels": (_npz(images=np.zeros((4, 16, 16, 4), np.uint8), labels=_labels()), "invalid_input",
                       "expected images of shape (N, H, W, 3) uint8, got (4, 16, 16, 4)"),
    "pickled labels": (_npz(pixel_values=_pixels(), labels=np.array([0, 1, 2, {"x": 1}], dtype=object)),
                       "invalid_input", "object arrays, which need pickle"),
    "pickled pixels": (_npz(pixel_values=np.array([None] * 4, dtype=object), labels=_labels()), "invalid_input",
                       "object arrays, which need pickle"),
    "not a zip": (_write("junk.npz", b"not a zip file at all"), "invalid_input", "not a readable .npz"),
    "empty npz": (_npz(pixel_values=_pixels(0), labels=_labels()[:0]), "invalid_dataset", "no images"),
    "wrong suffix": (_write("data.txt", b"hello"), "invalid_input", "expected a .npz file or a class-folder tree"),
    "unknown class": (_tree({"ant": None, "zebra": None}), "invalid_input",
                      "class folder 'zebra' is not one of the model's labels: 'ant', 'bee', 'cat', 'dog'"),
    "index out of range": (_tree({"4": None}), "invalid_input", "class folder '4' is not one of the model's labels"),
    "unreadable image": (_tree({"ant": b"\x89PNG but not really"}), "invalid_input",
                         "ant/a.png is not a readable image"),
    "empty tree": (_tree({}), "invalid_dataset", "no images found"),
    "missing": (lambda root: "nowhere.npz", "dataset_not_found", "no such file or folder"),
    "escaping symlink": (_escaping_link, "invalid_path", "outside the configured root"),
    "escaping image": (_escaping_image, "invalid_path", "outside the configured root"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_field(case: str, tmp_path: Path) -> None:
    write, code, message = BAD[case]
    root = tmp_path / "data"
    root.mkdir()
    rel = write(root)
    source = ImageSource(path=rel)
    with pytest.raises(PipelineError) as err:
        load_images(source, _settings(root), "evaluation.classification.heldout", tmp_path / "no-model", _config())
    assert err.value.code == code, err.value.message
    assert err.value.message.startswith("evaluation.classification.heldout.path"), err.value.message
    assert message in err.value.message, err.value.message
    assert str(tmp_path) not in err.value.message or code == "invalid_path"  # no server paths in content errors


def test_a_text_model_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "ok.npz", pixel_values=_pixels(), labels=_labels())
    text_config = AutoConfig.for_model("llama")
    with pytest.raises(PipelineError) as err:
        load_images(ImageSource(path="ok.npz"), _settings(tmp_path), FIELD, tmp_path, text_config)
    assert err.value.code == "invalid_input"
    assert err.value.message.startswith(f"{FIELD}.path: images need an image classifier"), err.value.message
