"""Stage ``export``: the HF model directory + ``delta.safetensors`` + ``manifest.json`` per sweep
point (one sub-directory per ``keep_mass`` for a sweep), the job report, and the typed
``JobResult``. The whole tree is staged and renamed into place at the end, so a failure or a
cancellation leaves nothing behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from contract.results import JobResult, Metrics, OutputInfo, StageCache, SweepPoint, TargetInfo
from contract.search import SearchResult
from workers.artifact_index import add_file_indexes
from workers.artifacts import library_versions, staging_dir, write_manifest, write_result
from workers.pipeline.report_stage import write_job_report
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.curvature import CurvatureOut
from workers.pipeline.stages.edit import EditedSweep
from workers.pipeline.stages.load import LoadedJob
from workers.pipeline.stages.plan import EditPlan


def point_dirname(keep_mass: float) -> str:
    """Directory name of one sweep point's result, e.g. ``rho-0.6``: the shortest text that reads
    back as the same float, so distinct sweep values never share a directory."""
    return f"rho-{float(keep_mass)!r}"


def export_stage(
    ctx: JobContext,
    job: LoadedJob,
    curv: CurvatureOut,
    plan: EditPlan,
    edits: EditedSweep,
    baseline: dict[str, Any],
) -> JobResult:
    clock, points = ctx.clock, edits.points
    clock.stage("export")
    common = _common_manifest(ctx, job, curv, plan, baseline)
    single = len(points) == 1
    with staging_dir(job.out_dir, attempt_tag=ctx.job_id) as tmp:
        common["report"] = write_job_report(
            tmp,
            job_id=ctx.job_id,
            model_label=job.loaded.label,
            points=points,
            baseline=baseline,
            targets=plan.targets,
            eigens=curv.result.eigens,
            search=common.get("search"),
            spec=common["spec"],
        ).files
        for i, point in enumerate(points):
            ctx.check_cancel("export")
            _write_point(ctx, job, edits, common, tmp, i, "" if single else point_dirname(point["keep_mass"]))
            ctx.reporter.progress((i + 1) / len(points))
        if not single:
            sweep = [
                {k: p[k] for k in ("keep_mass", "layers", "metrics", "comparison")}
                | {"dir": point_dirname(p["keep_mass"])}
                for p in points
            ]
            write_manifest(tmp, {**common, "sweep": sweep, "timings": dict(clock.timings)})
        add_file_indexes(tmp)  # every manifest lists its tree's files with sha256 (served over HTTP)
    clock.close()
    edits.restore()
    clock.timings["total"] = round(time.perf_counter() - ctx.started, 4)
    return _job_result(job, curv, plan, points, baseline, common, clock.cached, clock.timings)


def _common_manifest(
    ctx: JobContext, job: LoadedJob, curv: CurvatureOut, plan: EditPlan, baseline: dict[str, Any]
) -> dict[str, Any]:
    """The manifest fields every result of the job shares."""
    common: dict[str, Any] = {
        "format": "curvedit-manifest-v1",
        "job_id": ctx.job_id,
        "spec": ctx.spec.model_dump(mode="json"),
        "model": {"label": job.loaded.label, "dtype": curv.inputs.model_dtype},
        "fingerprints": job.fingerprints,
        "targets": [{"name": t.name, "layer": t.layer, "role": t.role, "shape": list(t.shape)} for t in plan.targets],
        "baseline_metrics": baseline,
        "cache": curv.result.cache,
        "cache_keys": curv.result.keys,
        "factor_stats": curv.result.factor_stats,
        "cached_stages": dict(ctx.clock.cached),
        "versions": library_versions(),
    }
    if plan.search is not None:
        common["search"] = plan.search
    return common


def _write_point(
    ctx: JobContext, job: LoadedJob, edits: EditedSweep, common: dict[str, Any], tmp: Path, i: int, sub: str
) -> None:
    """Sweep point ``i``'s model, delta and manifest under ``tmp/sub``; records its artifact paths."""
    point = edits.points[i]
    edited_now = edits.load_point(i)
    manifest = {
        **common,
        **{k: point[k] for k in ("keep_mass", "layers", "metrics", "comparison")},
        "timings": dict(ctx.clock.timings),
    }
    files = write_result(
        tmp / sub if sub else tmp,
        model=job.loaded.model,
        tokenizer=job.loaded.tokenizer,
        originals=edits.originals,
        edited=edited_now,
        manifest=manifest,
        save_model=ctx.spec.output.save_model,
        save_delta=ctx.spec.output.save_delta,
    )
    final = job.out_dir / sub if sub else job.out_dir
    point["artifacts"] = {
        "dir": str(final),
        "relative_dir": str(Path(job.out_rel) / sub) if sub else job.out_rel,
        **{k: str(final / v) if v != "." else str(final) for k, v in files.items()},
    }


def _job_result(
    job: LoadedJob,
    curv: CurvatureOut,
    plan: EditPlan,
    points: list[dict[str, Any]],
    baseline: dict[str, Any],
    common: dict[str, Any],
    cached: dict[str, bool],
    timings: dict[str, float],
) -> JobResult:
    optional: dict[str, Any] = {}  # fields only some jobs have (left out of the result otherwise)
    if plan.search is not None:
        optional["search"] = SearchResult.model_validate(plan.search)
    return JobResult(
        results=[SweepPoint.model_validate(p) for p in points],
        baseline=Metrics.model_validate(baseline),
        cache={stage: StageCache.model_validate(c) for stage, c in curv.result.cache.items()},
        cached_stages=dict(cached),
        timings=dict(timings),
        tokens=curv.result.tokens,
        targets=[TargetInfo.model_validate(t) for t in common["targets"]],
        fingerprints={"model": job.fingerprints["model"], "calibration": job.fingerprints["calibration"]},
        output=OutputInfo(dir=str(job.out_dir), relative_dir=job.out_rel, sweep=len(points) > 1),
        **optional,
    )
