"""Stage ``evaluate``: baseline (and the agreement reference) on the original weights, then every
sweep point; fills each point's ``metrics`` and before/after ``comparison``."""

from __future__ import annotations

from typing import Any

from workers.evaluation import compare
from workers.pipeline.evaluation_stage import EvaluationSuite
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.edit import EditedSweep
from workers.pipeline.stages.load import LoadedJob


def evaluate_stage(ctx: JobContext, job: LoadedJob, edits: EditedSweep) -> dict[str, Any]:
    """Returns the baseline metrics (empty without an evaluation section)."""
    ctx.clock.stage("evaluate")
    baseline: dict[str, Any] = {}
    if job.eval_data is None:
        ctx.reporter.event("info", "no evaluation requested", {"kind": "evaluate"})
        return baseline
    edits.restore()
    suite = EvaluationSuite(job.eval_data, job.loaded.model, job.loaded.tokenizer)
    suite.prepare_reference()
    baseline = suite.measure(with_agreement=False)
    ctx.reporter.event("info", "baseline metrics", {"kind": "metrics", "keep_mass": None, "metrics": baseline})
    for i, point in enumerate(edits.points):
        ctx.check_cancel("evaluate")
        edits.load_point(i)
        point["metrics"] = suite.measure()
        point["comparison"] = compare(baseline, point["metrics"])
        ctx.reporter.event(
            "info",
            f"metrics at keep_mass={point['keep_mass']:g}",
            {"kind": "metrics", "keep_mass": point["keep_mass"], "metrics": point["metrics"]},
        )
        ctx.reporter.progress((i + 1) / len(edits.points))
    return baseline
