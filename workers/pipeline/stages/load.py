"""Stage ``load_model``: resolve every input first (bad input fails before any tensor work), load
the model, resolve the edit targets and fingerprint what the job reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.settings import Settings
from contract.spec import EditJobSpec, with_model_projections
from workers.curvature import EditTarget, resolve_targets
from workers.curvature.targets import available_roles
from workers.pipeline.confine import confined
from workers.pipeline.errors import PipelineError
from workers.pipeline.evaluation_stage import EvaluationData, resolve_evaluation
from workers.pipeline.fingerprint import combine, digest_memo_path, fingerprint_model_dir, fingerprint_texts
from workers.pipeline.image_rows import ImageRows, load_calibration_images
from workers.pipeline.loading import LoadedModel, load_model
from workers.pipeline.search_stage import ObjectiveData, candidate_layer_sets, resolve_objective, search_targets
from workers.pipeline.sources import resolve_texts
from workers.pipeline.stages.context import JobContext


@dataclass
class LoadedJob:
    """Output of ``load_stage``: resolved inputs, the loaded model and the targets."""

    out_rel: str
    out_dir: Path
    calib_texts: list[str]
    eval_data: EvaluationData | None
    objective: ObjectiveData | None
    loaded: LoadedModel
    targets: list[EditTarget]
    layer_sets: list[list[int]]  # the search's candidate layer sets (empty without an objective)
    fingerprints: dict[str, Any]
    calib_sources: list[tuple[list[str], float]] | None = None  # factor union: (texts, weight) per source
    calib_images: tuple[ImageRows, str] | None = None  # image classifier: the images and their fingerprint


def load_stage(ctx: JobContext) -> LoadedJob:
    spec, settings = ctx.spec, ctx.settings
    ctx.clock.stage("load_model")
    out_rel = spec.output.path or ctx.job_id
    out_dir = confined(settings.output_root, out_rel, "output.path")
    if out_dir.exists():
        raise PipelineError("output_exists", f"output.path {out_rel!r} already exists under the output root")
    calib_sources = None
    if spec.calibration.sources is not None:  # factor union: each source's documents and its weight
        calib_sources = [
            (resolve_texts(src, settings, f"calibration.sources[{i}]"), w)
            for i, (src, w) in enumerate(spec.calibration.weighted_sources())
        ]
        calib_texts = [text for texts, _ in calib_sources for text in texts]
    elif spec.calibration.images is None:
        calib_texts = resolve_texts(spec.calibration, settings, "calibration")
    else:
        calib_texts = []  # images are read after the model: their preprocessing is the model's
    eval_data = resolve_evaluation(spec.evaluation, settings)
    objective = resolve_objective(spec.objective, settings) if spec.objective is not None else None
    loaded = load_model(spec.model, settings)
    model = loaded.model
    # projections the caller left out: the model's MLP input projections (what the gateway fills in too)
    spec = ctx.spec = with_model_projections(spec, available_roles(model))
    if objective is not None and spec.objective is not None:
        objective.spec = spec.objective
    calib_images = job_images(spec, settings, loaded, eval_data)
    layer_sets: list[list[int]] = []
    if objective is not None:  # every candidate layer set's targets: one factor collection for all
        layer_sets = candidate_layer_sets(objective.spec, model)
        targets = search_targets(objective.spec, model, layer_sets)
    else:
        targets = resolve_targets(
            model, layers=spec.edit.layers, projections=spec.edit.projections, modules=spec.edit.modules
        )
    if eval_data is not None and loaded.task == "causal-lm":  # out-of-vocabulary ids: invalid_input now
        eval_data.check_token_ids(int(model.get_input_embeddings().weight.shape[0]))
    model_files = fingerprint_model_dir(loaded.model_dir, digest_memo_path(settings.state_dir))
    fingerprints: dict[str, Any] = {
        "model": combine(model_files),
        "model_files": model_files,
        "calibration": fingerprint_texts(calib_texts) if calib_images is None else calib_images[1],
    }
    if eval_data is not None:
        fingerprints["evaluation"] = {
            "recitation": fingerprint_texts(json.dumps(p, default=str) for p in eval_data.pairs or []),
            "perplexity": fingerprint_texts(eval_data.ppl_texts or []),
            "agreement": fingerprint_texts(eval_data.agreement_texts or []),
            **eval_data.image_fingerprints(),
        }
    ctx.reporter.event(
        "info",
        f"loaded {loaded.label} ({loaded.dtype}, {loaded.device}); {len(targets)} target(s)",
        {"kind": "model", "targets": [t.name for t in targets], "fingerprint": fingerprints["model"]},
    )
    ctx.check_cancel("load_model")
    return LoadedJob(
        out_rel=out_rel,
        out_dir=out_dir,
        calib_texts=calib_texts,
        eval_data=eval_data,
        objective=objective,
        loaded=loaded,
        targets=targets,
        layer_sets=layer_sets,
        fingerprints=fingerprints,
        calib_sources=calib_sources,
        calib_images=calib_images,
    )


def job_images(
    spec: EditJobSpec, settings: Settings, loaded: LoadedModel, eval_data: EvaluationData | None
) -> tuple[ImageRows, str] | None:
    """An image classifier's calibration images (and their fingerprint), with the evaluation's image
    sets read into ``eval_data``; ``None`` for a causal LM. The data must match the model's kind."""
    if loaded.task != "image-classification":
        if spec.calibration.images is not None:
            raise PipelineError(
                "invalid_input",
                f"calibration.images: {loaded.label} is a causal language model; give it text calibration "
                "(calibration.path, dataset_id, texts or sources)",
            )
        return None
    if spec.calibration.images is None:
        raise PipelineError(
            "invalid_input",
            f"calibration.images: {loaded.label} is an image classifier; calibrate it with labelled images "
            "(calibration.images.path: a class-folder tree or a .npz), not text",
        )
    if eval_data is not None:
        eval_data.load_images(settings, loaded)
    return load_calibration_images(spec.calibration.images, settings, loaded)
