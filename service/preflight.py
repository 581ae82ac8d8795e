"""Gateway side of the preflight: the job's estimate from the model directory, or a 422 if it won't fit.

Reads ``config.json`` and the safetensors headers of the resolved model directory (no torch),
resolves the job's edit targets the way validation does (``edit.modules`` globs, or
``edit.layers`` x ``edit.projections``; for a goal-directed job the search's layer sets), and
hands the sizes to ``contract.preflight.estimate`` (an image classifier's sequences are images of a
fixed number of tokens). A hub model with no local directory gets no
estimate (``None``).
"""

from __future__ import annotations

import json
from typing import Any

from contract.families import mlp_slot
from contract.preflight import Capacity, JobShape, ModelDims, TargetShape, check_fits, estimate, model_dims
from contract.settings import Settings
from contract.spec import EditJobSpec, with_model_projections
from service.errors import ApiError
from service.model_inspect import ModelInfo, ModelInspectError, weight_shapes
from service.validation import check_model


def job_shape(spec: EditJobSpec, dims: ModelDims) -> JobShape:
    """The estimate's view of the spec. Images: a sequence is one image of ``dims.image_tokens``
    tokens and the budget is ``calibration.images.max_images`` of them."""
    sweep = spec.edit.keep_mass if isinstance(spec.edit.keep_mass, list) else [spec.edit.keep_mass]
    images = spec.calibration.images
    if images is not None and dims.image_tokens:
        seq_len, max_tokens = dims.image_tokens, images.max_images * dims.image_tokens
    else:
        seq_len, max_tokens = spec.calibration.seq_len, spec.calibration.max_tokens
    return JobShape(
        dtype=spec.model.dtype,
        batch_size=spec.calibration.batch_size,
        seq_len=seq_len,
        max_tokens=max_tokens,
        logits_chunk=spec.curvature.logits_chunk,
        samples=spec.curvature.samples,
        eig_dtype=spec.curvature.eig_dtype,
        sweep_points=spec.objective.search.max_trials if spec.objective is not None else len(sweep),
        search=spec.objective is not None,
    )


def capacity(settings: Settings) -> Capacity:
    return Capacity(
        memory_gb=settings.worker_memory_gb,
        tflops=settings.worker_tflops,
        devices=settings.worker_devices,
        device_map=settings.device_map,
    )


def _target_modules(spec: EditJobSpec, info: ModelInfo) -> list[str]:
    if spec.objective is not None:
        space = spec.objective.search
        layers = sorted({x for s in space.layer_sets or [] for x in s}) or list(range(info.num_layers))
        roles: list[str] = list(space.projections)
    elif spec.edit.modules is not None:
        return sorted({m for pattern in spec.edit.modules for m in info.match_modules(pattern)})
    else:
        layers = list(range(info.num_layers)) if spec.edit.layers is None else list(spec.edit.layers)
        roles = list(spec.edit.projections)
    n = info.num_layers
    modules: list[str] = []
    for x in layers:  # negative layers count from the end
        per = info.roles.get(x % n if n else x, {})
        modules.extend(per[r] for r in roles if r in per)
    return modules


def target_shapes(modules: list[str], shapes: dict[str, Any], dims: ModelDims) -> list[TargetShape]:
    out = []
    for m in modules:
        shape = shapes.get(f"{m}.weight")
        slot = mlp_slot(m)
        if shape is not None and len(shape) == 2:
            rows, cols = int(shape[0]), int(shape[1])
        elif slot is None:  # the (tied) output head (a classifier's: labels x hidden)
            rows, cols = dims.vocab, dims.hidden
        else:
            wide = slot.role in ("gate", "up")
            rows, cols = (dims.intermediate, dims.hidden) if wide else (dims.hidden, dims.intermediate)
        out.append(TargetShape(layer=slot.layer if slot else None, out_features=rows, in_features=cols))
    return out


_KNOB_FIELDS = {
    "activations": "calibration.batch_size",
    "weights": "model.dtype",
    "logits_chunk": "curvature.logits_chunk",
    "accumulators": "edit.layers",
    "eigenvectors": "edit.layers",
    "rotations": "edit.keep_mass",
}


def preflight(spec: EditJobSpec, settings: Settings) -> dict[str, Any] | None:
    """The job's estimate (stored as ``estimate``); raises a 422 ``insufficient_memory`` that names
    the knob to change when the peak exceeds ``CURVEDIT_WORKER_MEMORY_GB``."""
    info = check_model(spec, settings)
    spec = with_model_projections(spec, info.roles_available())
    try:
        config = json.loads((info.path / "config.json").read_text())
        found = weight_shapes(info.path)
    except (OSError, ValueError, ModelInspectError):
        return None
    shapes: dict[str, Any] = found[0] if found else {}
    dims = model_dims(config, shapes)
    job = job_shape(spec, dims)
    est = estimate(dims, target_shapes(_target_modules(spec, info), shapes, dims), job, capacity(settings))
    message = check_fits(est, job)
    if message is not None:
        top = max(est.memory.items(), key=lambda kv: kv[1])[0]
        raise ApiError(422, "insufficient_memory", message, field=_KNOB_FIELDS.get(top, "calibration.batch_size"))
    return est.to_dict()
