"""``run_pipeline``: one edit job, start to finish, against a ``Reporter`` (no Redis in here).

Stages, in order: ``load_model -> collect_factors -> eigendecompose -> edit -> evaluate -> export``,
each a stage object with typed inputs and outputs in ``workers/pipeline/stages/``; ``_run`` wires
them (``plan`` — the spec's sweep, or the goal-directed search — runs at the start of ``edit``).
Factors and eigenbases are computed (or fetched from the factor cache) once; for each
``keep_mass`` of a sweep the original weights are restored, the edit applied, the model evaluated
and one result exported. The whole output tree appears atomically at the end (staging directory
+ rename); a failure or cancellation leaves nothing behind.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from contract.results import JobResult
from contract.settings import Settings
from contract.spec import EditJobSpec
from workers.cache import FactorCache
from workers.curvature import TargetError
from workers.pipeline.curvature_stage import ShardFanout
from workers.pipeline.errors import PipelineError
from workers.pipeline.reporting import JobCancelled, Reporter
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.curvature import curvature_stage
from workers.pipeline.stages.edit import edit_stage
from workers.pipeline.stages.evaluate import evaluate_stage
from workers.pipeline.stages.export import export_stage
from workers.pipeline.stages.load import load_stage
from workers.pipeline.stages.plan import plan_stage


@contextmanager
def _typed_errors() -> Any:
    try:
        yield
    except (PipelineError, JobCancelled):
        raise
    except TargetError as exc:
        raise PipelineError("invalid_target", str(exc)) from exc
    except torch.cuda.OutOfMemoryError as exc:
        raise PipelineError("out_of_memory", f"out of GPU memory: {exc}") from exc
    except MemoryError as exc:
        raise PipelineError("out_of_memory", "out of host memory") from exc


def run_pipeline(
    spec: EditJobSpec,
    *,
    settings: Settings,
    job_id: str,
    reporter: Reporter,
    cache: FactorCache | None,
    fanout: ShardFanout | None = None,
) -> dict[str, Any]:
    """Run one edit job; returns the job result: a ``contract.results.JobResult`` in its JSON form
    (``JobResult.to_json()``, what the job record stores).

    ``fanout`` (optional) offers factor-collection shards to other workers when
    ``settings.collect_shards > 1``. Raises ``PipelineError`` (typed failure) or ``JobCancelled``."""
    with _typed_errors():
        ctx = JobContext(spec=spec, settings=settings, job_id=job_id, reporter=reporter, cache=cache, fanout=fanout)
        return _run(ctx).to_json()


def _run(ctx: JobContext) -> JobResult:
    job = load_stage(ctx)
    curv = curvature_stage(ctx, job)
    plan = plan_stage(ctx, job, curv)
    edits = edit_stage(ctx, job, curv, plan)
    baseline = evaluate_stage(ctx, job, edits)
    return export_stage(ctx, job, curv, plan, edits, baseline)
