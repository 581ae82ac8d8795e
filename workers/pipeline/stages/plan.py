"""Which targets to edit, at which ``keep_mass`` values: the spec's sweep, or — for a job with
``spec.objective`` — the goal-directed search's choice (``workers/pipeline/search_stage.py``).
Runs at the start of the ``edit`` stage; this is where a stage between eigendecompose and the
edit plugs in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.curvature import EditTarget
from workers.pipeline.search_stage import goal_directed_edit
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.curvature import CurvatureOut
from workers.pipeline.stages.load import LoadedJob


@dataclass
class EditPlan:
    """Output of ``plan_stage``: the targets, the sweep and (goal-directed) the search result."""

    targets: list[EditTarget]
    sweep: list[float]
    search: dict[str, Any] | None = None  # SearchResult in its JSON form


def plan_stage(ctx: JobContext, job: LoadedJob, curv: CurvatureOut) -> EditPlan:
    ctx.clock.stage("edit")
    if job.objective is None:
        return EditPlan(targets=job.targets, sweep=list(ctx.spec.edit.sweep))
    # the search picks the layers and rho; the edit stage then makes the chosen edit
    found, targets = goal_directed_edit(
        job.objective,
        job.loaded.model,
        job.loaded.tokenizer,
        job.targets,
        curv.result.eigens,
        job.layer_sets,
        ctx.reporter,
        best_effort=ctx.spec.output.best_effort,
    )
    assert found.chosen is not None
    return EditPlan(targets=targets, sweep=[found.chosen.keep_mass], search=found.model_dump(mode="json"))
