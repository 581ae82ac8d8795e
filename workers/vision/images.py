"""Labelled images for an image classifier: read an ``ImageSource`` into model-ready tensors.

``load_images`` resolves ``source.path`` under ``settings.data_root`` (confined) and reads

- a ``.npz`` (loaded without pickle) holding ``labels`` (N,) integers and either
  ``pixel_values`` (N, C, H, W) float, already preprocessed for the model, or ``images``
  (N, H, W, C) uint8, preprocessed here;
- a class-folder tree ``<class>/<image>.png|.jpg|.jpeg|.bmp|.webp``: the class of a folder is the
  model's ``config.label2id`` entry of that name, else the folder name read as a label index.

Preprocessing of raw images (uint8 arrays and image files): the model's own image processor
(``AutoImageProcessor.from_pretrained(model_dir)``) when ``preprocessor_config.json`` is saved
beside the model; otherwise ViT's defaults -- bilinear resize to ``config.image_size``, scale to
[0, 1], normalise with mean = std = 0.5 per channel. Either way the result must have the shape the
model expects, ``(C, image_size, image_size)`` with ``C = config.num_channels``.

Only the first ``source.max_images`` images are read (sorted class folder, then file name, for a
tree). Bad content raises ``PipelineError('invalid_input', ...)`` naming the field (for example
``calibration.images.path: expected pixel_values of shape (N, 3, 16, 16), got (4, 3, 8, 8)``);
messages never show server paths. ``image_batches`` feeds ``collect_factors`` and
``fingerprint_images`` keys the factor cache.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.settings import Settings
from contract.spec import IMAGE_SUFFIXES, ImageSource
from workers.pipeline.confine import confined
from workers.pipeline.errors import PipelineError

DEFAULT_MEAN = 0.5  # ViT's default normalisation (mean = std = 0.5 per channel)
DEFAULT_STD = 0.5
PREPROCESS_CHUNK = 256  # raw images preprocessed per call


@dataclass
class ImageSet:
    """``pixel_values`` float32 (N, C, H, W) and ``labels`` int64 (N,); ``label`` names the set in messages."""

    pixel_values: torch.Tensor
    labels: torch.Tensor
    label: str

    def __post_init__(self) -> None:
        if self.pixel_values.dim() != 4 or self.pixel_values.dtype != torch.float32:
            raise ValueError(
                f"expected pixel_values float32 (N, C, H, W), got {self.pixel_values.dtype} "
                f"{tuple(self.pixel_values.shape)}"
            )
        if self.labels.shape != (self.pixel_values.shape[0],) or self.labels.dtype != torch.int64:
            raise ValueError(
                f"expected labels int64 of shape ({self.pixel_values.shape[0]},), got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class _ModelInput:
    """What the model expects: channels, (height, width), label count and names."""

    channels: int
    size: tuple[int, int]
    num_labels: int
    label2id: dict[str, int]

    @classmethod
    def of(cls, config: Any, field: str) -> _ModelInput:
        size = getattr(config, "image_size", None)
        if isinstance(size, (list, tuple)):
            hw = (int(size[0]), int(size[1]))
        elif isinstance(size, int):
            hw = (size, size)
        else:
            kind = getattr(config, "model_type", None) or type(config).__name__
            raise _bad(field, f"images need an image classifier, but the model ({kind}) has no image_size")
        num_labels = int(getattr(config, "num_labels", 0) or 0)
        if num_labels < 1:
            raise _bad(field, f"images need a classifier with labels, but the model has num_labels={num_labels}")
        label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
        return cls(int(getattr(config, "num_channels", 3) or 3), hw, num_labels, label2id)

    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def label_names(self) -> str:
        names = sorted(self.label2id, key=lambda k: self.label2id[k])
        shown = ", ".join(repr(n) for n in names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        return f"{shown} (or a label index 0..{self.num_labels - 1})"


def _bad(field: str, message: str) -> PipelineError:
    return PipelineError("invalid_input", f"{field}: {message}")


def _shape(a: np.ndarray | torch.Tensor) -> str:
    return str(tuple(int(d) for d in a.shape))


class _Preprocessor:
    """Raw uint8 (H, W, C) images -> float32 (N, C, H, W): the model's processor or ViT's defaults."""

    def __init__(self, model_dir: Path, want: _ModelInput) -> None:
        self.want = want
        self.processor: Any = None
        if (Path(model_dir) / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor

            self.processor = AutoImageProcessor.from_pretrained(model_dir)

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        if self.processor is not None:
            # channels_last always: a (3, W, 3) image would otherwise be read as channels-first
            out = self.processor(images=images, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
            return torch.as_tensor(out).float()
        return torch.stack([self._default(img) for img in images])

    def _default(self, img: np.ndarray) -> torch.Tensor:
        from PIL import Image

        h, w = self.want.size
        if img.shape[:2] != (h, w):
            mode_img = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
            resized = np.asarray(mode_img.resize((w, h), resample=Image.Resampling.BILINEAR))
            img = resized.reshape(h, w, -1)
        x = torch.from_numpy(np.array(img, dtype=np.float32)).div_(255.0)  # a writable copy
        return x.permute(2, 0, 1).sub_(DEFAULT_MEAN).div_(DEFAULT_STD).contiguous()


def _preprocess(images: list[np.ndarray], model_dir: Path, want: _ModelInput, field: str) -> torch.Tensor:
    """Preprocess in chunks and check the result has the model's input shape."""
    pre = _Preprocessor(model_dir, want)
    parts = [pre(images[i : i + PREPROCESS_CHUNK]) for i in range(0, len(images), PREPROCESS_CHUNK)]
    pixels = torch.cat(parts)
    if tuple(pixels.shape[1:]) != want.shape():
        raise _bad(
            field,
            f"the model's image processor gives images of shape {_shape(pixels[0])}, but the model expects "
            f"{want.shape()}",
        )
    return pixels


def _check_labels(labels: np.ndarray, n: int, want: _ModelInput, field: str) -> torch.Tensor:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise _bad(field, f"expected labels of shape ({n},) (one per image), got {_shape(labels)}")
    if labels.dtype.kind not in "iu":
        raise _bad(field, f"expected integer labels, got dtype {labels.dtype}")
    out = torch.from_numpy(labels.astype(np.int64))
    bad = ((out < 0) | (out >= want.num_labels)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise _bad(
            field,
            f"labels[{i}] = {int(out[i])} is out of range: the model has {want.num_labels} labels "
            f"(0..{want.num_labels - 1})",
        )
    return out


def _read_npz(path: Path, source: ImageSource, want: _ModelInput, model_dir: Path, field: str) -> ImageSet:
    if not zipfile.is_zipfile(path):  # np.load would take anything else for a .npy or a pickle
        raise _bad(field, "not a readable .npz (not a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if "labels" not in keys:
                raise _bad(field, f"the .npz has no 'labels' array (it has {sorted(keys)})")
            kinds = [k for k in ("pixel_values", "images") if k in keys]
            if len(kinds) != 1:
                raise _bad(
                    field, f"the .npz must hold exactly one of 'pixel_values' or 'images' (it has {sorted(keys)})"
                )
            labels_all = npz["labels"]
            data = npz[kinds[0]]
    except PipelineError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _bad(field, "the .npz holds object arrays, which need pickle; only plain arrays are read") from exc
        raise _bad(field, f"not a readable .npz ({exc})") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _bad(field, f"not a readable .npz ({type(exc).__name__})") from exc
    if data.ndim < 1 or labels_all.ndim != 1 or data.shape[0] != labels_all.shape[0]:
        raise _bad(
            field,
            f"expected one label per image, got {kinds[0]} of shape {_shape(data)} and labels {_shape(labels_all)}",
        )
    if data.shape[0] == 0:
        raise PipelineError("invalid_dataset", f"{field}: the .npz holds no images")
    n = min(int(labels_all.shape[0]), source.max_images)
    labels = _check_labels(labels_all[:n], n, want, field)
    c, h, w = want.shape()
    if kinds[0] == "pixel_values":
        if data.ndim != 4 or data.shape[1:] != (c, h, w):
            raise _bad(field, f"expected pixel_values of shape (N, {c}, {h}, {w}), got {_shape(data)}")
        if data.dtype.kind != "f":
            raise _bad(field, f"expected float pixel_values (already preprocessed), got dtype {data.dtype}")
        pixels = torch.from_numpy(np.ascontiguousarray(data[:n], dtype=np.float32))
        if not torch.isfinite(pixels).all():
            i = int((~torch.isfinite(pixels)).flatten(1).any(1).nonzero()[0, 0])
            raise _bad(field, f"pixel_values[{i}] is not finite (NaN or inf)")
    else:
        if data.ndim != 4 or data.shape[3] != c:
            raise _bad(field, f"expected images of shape (N, H, W, {c}) uint8, got {_shape(data)}")
        if data.dtype != np.uint8:
            raise _bad(field, f"expected uint8 images (0..255), got dtype {data.dtype}")
        pixels = _preprocess(list(data[:n]), model_dir, want, field)
    return ImageSet(pixels, labels, field)


def _class_index(name: str, want: _ModelInput, field: str) -> int:
    if name in want.label2id:
        return want.label2id[name]
    if name.isdigit() and int(name) < want.num_labels:
        return int(name)
    raise _bad(field, f"class folder {name!r} is not one of the model's labels: {want.label_names()}")


def _read_image(path: Path, shown: str, channels: int, field: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise _bad(field, f"{shown} is not a readable image ({type(exc).__name__})") from exc
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _read_tree(
    root: Path, source: ImageSource, settings: Settings, want: _ModelInput, model_dir: Path, field: str
) -> ImageSet:
    if want.channels not in (1, 3):
        raise _bad(field, f"image files need a 1- or 3-channel model, this one has {want.channels} channels")
    files: list[tuple[str, int]] = []  # (path relative to the tree, class index)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = _class_index(folder.name, want, field)
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                files.append((f"{folder.name}/{f.name}", index))
    if not files:
        raise PipelineError(
            "invalid_dataset",
            f"{field}: no images found (expected <class>/<image> with suffix {', '.join(IMAGE_SUFFIXES)})",
        )
    files = files[: source.max_images]
    arrays = []
    for rel, _ in files:
        path = confined(settings.data_root, f"{source.path.rstrip('/')}/{rel}", field)  # symlinks stay inside
        arrays.append(_read_image(path, rel, want.channels, field))
    labels = torch.tensor([i for _, i in files], dtype=torch.int64)
    return ImageSet(_preprocess(arrays, model_dir, want, field), labels, field)


def load_images(source: ImageSource, settings: Settings, field: str, model_dir: Path, config: Any) -> ImageSet:
    """The labelled images of ``source`` preprocessed for the model saved at ``model_dir``.

    ``field`` names the spec field in messages (``calibration.images``, ``evaluation.classification.memorized``);
    ``config`` is the model's config (``image_size``, ``num_channels``, ``num_labels``, ``label2id``).
    Raw images use the model's image processor when ``preprocessor_config.json`` exists, else a
    bilinear resize to ``config.image_size`` and normalisation with mean = std = 0.5 (ViT's default).
    """
    where = f"{field}.path"
    want = _ModelInput.of(config, where)
    path = confined(settings.data_root, source.path, where)
    if path.is_dir():
        images = _read_tree(path, source, settings, want, model_dir, where)
    elif not path.is_file():
        raise PipelineError("dataset_not_found", f"{where} {source.path!r}: no such file or folder under the data root")
    elif path.suffix.lower() != ".npz":
        raise _bad(where, f"expected a .npz file or a class-folder tree, got a {path.suffix or 'suffix-less'} file")
    else:
        images = _read_npz(path, source, want, model_dir, where)
    return replace(images, label=field)


def image_batches(images: ImageSet, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """``{"pixel_values": (B, C, H, W), "labels": (B,)}`` slices in order (the image index is the position)."""
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        yield {"pixel_values": images.pixel_values[start:stop], "labels": images.labels[start:stop]}


def fingerprint_images(images: ImageSet) -> str:
    """sha256 over the tensors' shapes, dtypes and bytes (pixel values, then labels): the factor-cache key."""
    h = hashlib.sha256()
    for name, t in (("pixel_values", images.pixel_values), ("labels", images.labels)):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
