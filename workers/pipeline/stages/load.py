"""Stage ``load_model``: resolve every input first (bad input fails before any tensor work), load
the model, resolve the edit targets and fingerprint what the job reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.curvature import EditTarget, resolve_targets
from workers.pipeline.confine import confined
from workers.pipeline.errors import PipelineError
from workers.pipeline.evaluation_stage import EvaluationData, resolve_evaluation
from workers.pipeline.fingerprint import combine, digest_memo_path, fingerprint_model_dir, fingerprint_texts
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
    else:
        calib_texts = resolve_texts(spec.calibration, settings, "calibration")
    eval_data = resolve_evaluation(spec.evaluation, settings)
    objective = resolve_objective(spec.objective, settings) if spec.objective is not None else None
    loaded = load_model(spec.model, settings)
    model = loaded.model
    layer_sets: list[list[int]] = []
    if objective is not None:  # every candidate layer set's targets: one factor collection for all
        layer_sets = candidate_layer_sets(objective.spec, model)
        targets = search_targets(objective.spec, model, layer_sets)
    else:
        targets = resolve_targets(
            model, layers=spec.edit.layers, projections=spec.edit.projections, modules=spec.edit.modules
        )
    if eval_data is not None:  # token ids out of the vocabulary: invalid_input before any tensor work
        eval_data.check_token_ids(int(model.get_input_embeddings().weight.shape[0]))
    model_files = fingerprint_model_dir(loaded.model_dir, digest_memo_path(settings.state_dir))
    fingerprints: dict[str, Any] = {
        "model": combine(model_files),
        "model_files": model_files,
        "calibration": fingerprint_texts(calib_texts),
    }
    if eval_data is not None:
        fingerprints["evaluation"] = {
            "recitation": fingerprint_texts(json.dumps(p, default=str) for p in eval_data.pairs or []),
            "perplexity": fingerprint_texts(eval_data.ppl_texts or []),
            "agreement": fingerprint_texts(eval_data.agreement_texts or []),
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
    )
