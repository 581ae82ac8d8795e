"""Stages ``collect_factors`` and ``eigendecompose``: K-FAC factors and their eigenbases for the
targets, from the factor cache where possible (``workers/pipeline/curvature_stage.py``); with
``curvature.estimator = "ekfac"`` also the eigenvalue corrections (``workers/pipeline/ekfac_stage.py``);
with ``calibration.sources`` the factor union (``workers/pipeline/union_stage.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.cache.guarded import GuardedCache
from workers.pipeline.curvature_stage import CurvatureInputs, CurvatureResult, compute_curvature, curvature_inputs
from workers.pipeline.ekfac_stage import compute_corrections
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.load import LoadedJob
from workers.pipeline.union_stage import compute_union_curvature, union_corrections


@dataclass
class CurvatureOut:
    """Output of ``curvature_stage``: what the factors were computed from, and the result."""

    inputs: CurvatureInputs
    result: CurvatureResult
    corrections: dict[str, torch.Tensor] | None = None  # EK-FAC s per target (estimator "ekfac")


def curvature_stage(ctx: JobContext, job: LoadedJob) -> CurvatureOut:
    inputs = curvature_inputs(ctx.spec, ctx.settings, job.loaded, job.calib_texts, job.calib_images)
    reporter = ctx.reporter
    guarded = (
        None
        if ctx.cache is None
        else GuardedCache(ctx.cache, lambda msg: reporter.event("warning", msg, {"kind": "cache"}))
    )
    model, targets = job.loaded.model, job.targets
    sources: list[CurvatureInputs] = []
    weights: list[float] = []
    if job.calib_sources is not None:  # factor union: per-source sums, weighted means
        for texts, w in job.calib_sources:
            sources.append(curvature_inputs(ctx.spec, ctx.settings, job.loaded, texts))
            weights.append(w)
        result = compute_union_curvature(
            model, targets, sources, weights, reporter=reporter, cache=guarded, on_stage=ctx.clock.stage
        )
    else:
        result = compute_curvature(
            model, targets, inputs, reporter=reporter, cache=guarded, on_stage=ctx.clock.stage, fanout=ctx.fanout
        )
    corrections = None
    if ctx.spec.curvature.estimator == "ekfac":
        if sources:
            corr = union_corrections(model, targets, sources, weights, result.eigens, reporter=reporter, cache=guarded)
        else:
            corr = compute_corrections(model, targets, inputs, result.eigens, reporter=reporter, cache=guarded)
        corrections = corr.scores
        result.cache["ekfac"] = corr.cache  # reported in the manifest and the job result
        result.keys.update(corr.keys)
    return CurvatureOut(inputs=inputs, result=result, corrections=corrections)
