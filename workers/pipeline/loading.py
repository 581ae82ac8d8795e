"""Model loading: a local directory under ``settings.model_root`` or a hub id + revision resolved
through the local Hugging Face cache (``HF_HUB_OFFLINE`` honoured: then ``local_files_only``).

Two kinds of model: a causal LM (``AutoModelForCausalLM`` + its tokenizer) or, when the config's
``architectures`` name an ``...ForImageClassification`` class, an image classifier
(``AutoModelForImageClassification`` + its image processor, ``None`` when the checkpoint ships no
``preprocessor_config.json``). ``LoadedModel.task`` says which; ``LoadedModel.tokenizer`` holds the
model's preprocessor either way (what the exported copy saves beside the weights).

Safetensors only (``use_safetensors=True``); ``trust_remote_code`` only when the deployment
allows it; the dtype from the spec; the device from ``settings.device`` (``auto`` -> CUDA when
available) or ``settings.device_map`` for a model spread over several GPUs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from contract.settings import Settings
from contract.spec import ModelSpec
from workers.pipeline.confine import confined
from workers.pipeline.errors import PipelineError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]


Task = Literal["causal-lm", "image-classification"]


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any  # the tokenizer, or the image processor of an image classifier (may be None)
    model_dir: Path
    label: str
    dtype: torch.dtype
    device: torch.device
    task: Task = "causal-lm"


def model_task(model_dir: Path) -> Task:
    """``image-classification`` when ``config.json`` names a ``...ForImageClassification``
    architecture, else ``causal-lm``."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return "causal-lm"  # loading reports the unreadable config with its own message
    archs = config.get("architectures") if isinstance(config, dict) else None
    if isinstance(archs, list) and any(isinstance(a, str) and a.endswith("ForImageClassification") for a in archs):
        return "image-classification"
    return "causal-lm"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_model_dir(spec: ModelSpec, settings: Settings) -> tuple[Path, str]:
    """The local directory holding the model files, and a label for records."""
    if spec.path is not None:
        path = confined(settings.model_root, spec.path, "model.path")
        if not (path / "config.json").is_file():
            raise PipelineError(
                "model_not_found", f"model.path {spec.path!r}: no Hugging Face model directory (config.json) at {path}"
            )
        return path, spec.path
    from huggingface_hub import snapshot_download

    assert spec.hub_id is not None
    label = f"{spec.hub_id}@{spec.revision}"
    try:
        snap = snapshot_download(
            repo_id=spec.hub_id,
            revision=spec.revision,
            allow_patterns=_HUB_PATTERNS,
            local_files_only=hub_offline(),
        )
    except Exception as exc:  # noqa: BLE001 - every hub failure means the same thing to the job
        raise PipelineError(
            "model_not_found",
            f"model.hub_id {label}: not available in the local Hugging Face cache"
            f"{' (HF_HUB_OFFLINE=1)' if hub_offline() else ''}: {exc}",
        ) from exc
    return Path(snap), label


def load_model(spec: ModelSpec, settings: Settings) -> LoadedModel:
    """Load tokenizer and causal LM; typed errors for every way this fails."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.trust_remote_code and not settings.allow_remote_code:
        raise PipelineError(
            "remote_code_not_allowed",
            "model.trust_remote_code=true but this deployment does not allow remote code "
            "(set CURVEDIT_ALLOW_REMOTE_CODE=1)",
        )
    model_dir, label = resolve_model_dir(spec, settings)
    if not any(model_dir.glob("*.safetensors")):
        raise PipelineError("model_not_found", f"{label}: no *.safetensors weights in {model_dir} (pickle is refused)")
    device = resolve_device(settings.device)
    kwargs: dict[str, Any] = {
        "use_safetensors": True,
        "trust_remote_code": bool(spec.trust_remote_code),
        "dtype": "auto" if spec.dtype == "auto" else _DTYPES[spec.dtype],
        "local_files_only": True,
    }
    if settings.device_map:
        kwargs["device_map"] = settings.device_map
    task = model_task(model_dir)
    try:
        if task == "image-classification":
            tokenizer, model = _image_classifier(model_dir, spec, kwargs)
        else:
            tokenizer = AutoTokenizer.from_pretrained(
                model_dir, trust_remote_code=bool(spec.trust_remote_code), local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if not settings.device_map:
            model.to(device)  # type: ignore[arg-type]
    except torch.cuda.OutOfMemoryError as exc:
        raise PipelineError("out_of_memory", f"{label}: out of GPU memory while loading: {exc}") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise PipelineError("model_load_failed", f"{label}: could not load the model: {exc}") from exc
    model.eval()  # the tokenizer is left as shipped: the exported copy must match the base
    dtype = next(model.parameters()).dtype
    return LoadedModel(
        model=model, tokenizer=tokenizer, model_dir=model_dir, label=label, dtype=dtype, device=device, task=task
    )


def _image_classifier(model_dir: Path, spec: ModelSpec, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The image processor (None without ``preprocessor_config.json``) and the classifier."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = None
    if (model_dir / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(
            model_dir, trust_remote_code=bool(spec.trust_remote_code), local_files_only=True
        )
    return processor, AutoModelForImageClassification.from_pretrained(model_dir, **kwargs)
