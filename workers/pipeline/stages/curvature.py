"""Stages ``collect_factors`` and ``eigendecompose``: K-FAC factors and their eigenbases for the
targets, from the factor cache where possible (``workers/pipeline/curvature_stage.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.cache.guarded import GuardedCache
from workers.pipeline.curvature_stage import CurvatureInputs, CurvatureResult, compute_curvature, curvature_inputs
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.load import LoadedJob


@dataclass
class CurvatureOut:
    """Output of ``curvature_stage``: what the factors were computed from, and the result."""

    inputs: CurvatureInputs
    result: CurvatureResult


def curvature_stage(ctx: JobContext, job: LoadedJob) -> CurvatureOut:
    inputs = curvature_inputs(ctx.spec, ctx.settings, job.loaded, job.calib_texts)
    reporter = ctx.reporter
    guarded = (
        None
        if ctx.cache is None
        else GuardedCache(ctx.cache, lambda msg: reporter.event("warning", msg, {"kind": "cache"}))
    )
    result = compute_curvature(
        job.loaded.model,
        job.targets,
        inputs,
        reporter=reporter,
        cache=guarded,
        on_stage=ctx.clock.stage,
        fanout=ctx.fanout,
    )
    return CurvatureOut(inputs=inputs, result=result)
