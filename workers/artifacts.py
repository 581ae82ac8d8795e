"""Edit artifacts, written atomically, and the delta that re-applies or reverts an edit.

One result directory holds:

- the edited Hugging Face model (safetensors weights, config, tokenizer) that
  ``AutoModelForCausalLM.from_pretrained`` loads;
- ``delta.safetensors``: only the edited parameters, both ``<param>.original`` and
  ``<param>.edited`` (``<param>`` is e.g. ``model.layers.3.mlp.gate_proj.weight``), so
  ``apply_delta(base, path)`` reproduces the edit and ``apply_delta(edited, path, "original")``
  reverts it;
- ``manifest.json``: resolved spec, input fingerprints, per-layer selection, metrics, timings and
  library versions.

``staging_dir`` makes a whole output tree appear at once: everything is written to
``<output>.tmp-<random>`` and renamed into place; on failure the temporary tree is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workers.pipeline.errors import PipelineError
from workers.staging import remove_staging, staging_prefix

DELTA_FILE = "delta.safetensors"
MANIFEST_FILE = "manifest.json"


def library_versions() -> dict[str, str]:
    import safetensors
    import transformers

    try:
        from importlib.metadata import version

        curvedit = version("curvedit")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        curvedit = "unknown"
    return {
        "curvedit": curvedit,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def staging_dir(final: Path, attempt_tag: str | None = None) -> Iterator[Path]:
    """Yield ``<final>.tmp-[<tag>-]<random>``; when the block ends it is renamed to ``final``
    (refusing to replace an existing directory); when the block raises it is removed, leaving
    nothing behind.

    ``attempt_tag`` (the job id) names the staging directories of one job: a process killed with
    ``kill -9`` cannot clean up, so the next attempt of the same job first removes the staging
    directories its earlier attempts left (only one live process holds a job at a time)."""
    final = Path(final)
    if final.exists():
        raise PipelineError("output_exists", f"output directory {final} already exists; choose another output.path")
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = staging_prefix(final, attempt_tag)
    if attempt_tag:
        remove_staging(final, attempt_tag)
    tmp = final.parent / f"{prefix}{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            raise PipelineError("output_exists", f"output directory {final} appeared while the job ran")
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_delta(path: Path, originals: Mapping[str, torch.Tensor], edited: Mapping[str, torch.Tensor]) -> None:
    """``<param>.original`` and ``<param>.edited`` for every edited parameter."""
    tensors: dict[str, torch.Tensor] = {}
    for name, orig in originals.items():
        tensors[f"{name}.original"] = orig.detach().to("cpu").contiguous()
        tensors[f"{name}.edited"] = edited[name].detach().to("cpu").contiguous()
    save_file(tensors, str(path), metadata={"format": "curvedit-delta-v1"})


def read_delta(path: Path, direction: Literal["edited", "original"] = "edited") -> dict[str, torch.Tensor]:
    """``{param name: tensor}`` for one direction of a delta file."""
    suffix = f".{direction}"
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
            if key.endswith(suffix):
                out[key[: -len(suffix)]] = fh.get_tensor(key)
    return out


@torch.no_grad()
def apply_delta(
    model: torch.nn.Module, delta_path: Path, direction: Literal["edited", "original"] = "edited"
) -> list[str]:
    """Write the delta's ``edited`` (re-apply) or ``original`` (revert) tensors into ``model``.

    Returns the parameter names written. Raises ``KeyError`` naming a parameter the model lacks
    and ``ValueError`` on a shape mismatch."""
    if direction not in ("edited", "original"):
        raise ValueError("direction must be 'edited' or 'original'")
    params = dict(model.named_parameters())
    written = []
    for name, value in read_delta(Path(delta_path), direction).items():
        if name not in params:
            raise KeyError(f"delta names {name!r}, which this model does not have")
        p = params[name]
        if tuple(p.shape) != tuple(value.shape):
            raise ValueError(f"delta tensor {name!r} has shape {tuple(value.shape)}, the model {tuple(p.shape)}")
        p.copy_(value.to(device=p.device, dtype=p.dtype))
        written.append(name)
    return written


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    (Path(directory) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str, allow_nan=True))


def write_result(
    directory: Path,
    *,
    model: Any,
    tokenizer: Any,
    originals: Mapping[str, torch.Tensor],
    edited: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    save_model: bool = True,
    save_delta: bool = True,
) -> dict[str, str]:
    """Write one result (the model must currently hold the edited weights) into ``directory``
    (inside a staging tree). Returns the artifact paths relative to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if save_model:
        model.save_pretrained(directory, safe_serialization=True)
        if tokenizer is not None:  # an image classifier may ship no image processor
            tokenizer.save_pretrained(directory)
        files["model"] = "."
    if save_delta:
        write_delta(directory / DELTA_FILE, originals, edited)
        files["delta"] = DELTA_FILE
    write_manifest(directory, manifest)
    files["manifest"] = MANIFEST_FILE
    return files
