"""Stage ``edit``: one edited copy of the targets' weights per sweep point
(``W' = U_G (C ⊙ M) U_Aᵀ``, ``workers/curvature/edit.py``), kept in host memory when they fit
``EDITED_COPIES_BYTES``; otherwise a point is re-edited from the originals when evaluate/export
need it (two matrix products per layer)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from contract.spec import KeepMassOverride
from workers.curvature import EditTarget, Rotations, apply_edit
from workers.curvature.targets import num_layers
from workers.pipeline.stages.context import JobContext
from workers.pipeline.stages.curvature import CurvatureOut
from workers.pipeline.stages.load import LoadedJob
from workers.pipeline.stages.plan import EditPlan

EDITED_COPIES_BYTES = 4 * 2**30


def keep_mass_for(base: float, overrides: list[KeepMassOverride], n_layers: int) -> Callable[[EditTarget], float]:
    """Per-target keep_mass: ``base`` unless an override matches (last match wins)."""

    def rho(t: EditTarget) -> float:
        value = base
        for o in overrides:
            if o.layer is not None and (t.layer is None or o.layer % max(n_layers, 1) != t.layer):
                continue
            if o.projection is not None and o.projection != t.role:
                continue
            if o.module is not None and not fnmatch.fnmatchcase(t.name, o.module):
                continue
            value = o.keep_mass
        return value

    return rho


@torch.no_grad()
def write_params(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    for name, value in values.items():
        params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))


def snapshot(params: dict[str, torch.nn.Parameter], names: list[str]) -> dict[str, torch.Tensor]:
    return {n: params[n].detach().to("cpu", copy=True) for n in names}


@dataclass
class EditedSweep:
    """Output of ``edit_stage``: the original weights, one point record per sweep value
    (``keep_mass``, ``layers``, then ``metrics`` / ``comparison`` / ``artifacts`` as later stages
    fill them in) and a way to put any point's edited weights into the model."""

    params: dict[str, torch.nn.Parameter]
    originals: dict[str, torch.Tensor]
    points: list[dict[str, Any]]
    reedit: Callable[[int], None]  # apply point i's edit to the model from the originals
    copies: list[dict[str, torch.Tensor] | None] = field(default_factory=list)

    def restore(self) -> None:
        """Put the original weights back."""
        write_params(self.params, self.originals)

    def load_point(self, i: int) -> dict[str, torch.Tensor]:
        """Put sweep point ``i``'s edited weights into the model; returns them (host copies)."""
        copy = self.copies[i]
        if copy is not None:
            write_params(self.params, copy)
            return copy
        self.restore()
        self.reedit(i)
        return snapshot(self.params, list(self.originals))


def edit_stage(ctx: JobContext, job: LoadedJob, curv: CurvatureOut, plan: EditPlan) -> EditedSweep:
    model, targets, sweep = job.loaded.model, plan.targets, plan.sweep
    eigens, overrides = curv.result.eigens, ctx.spec.edit.overrides
    params = dict(model.named_parameters())
    pnames = [f"{t.name}.weight" for t in targets]
    n_layers = num_layers(model)
    # A sweep rotates each target once (C = U_G^T W U_A of the originals) and reuses C per point.
    rotations = Rotations() if len(sweep) > 1 else None

    def reedit(i: int) -> Any:
        rho = keep_mass_for(sweep[i], overrides, n_layers)
        return apply_edit(model, targets, eigens, rho, rotations, curv.corrections)

    out = EditedSweep(params=params, originals=snapshot(params, pnames), points=[], reedit=reedit)
    per_point = sum(params[n].numel() * params[n].element_size() for n in pnames)
    keep_copies = per_point * len(sweep) <= EDITED_COPIES_BYTES
    for i, rho in enumerate(sweep):
        ctx.check_cancel("edit")
        out.restore()
        reports = reedit(i)
        out.copies.append(snapshot(params, pnames) if keep_copies else None)
        layers = [r.to_dict() for r in reports]
        out.points.append({"keep_mass": rho, "layers": layers, "metrics": {}, "comparison": [], "artifacts": {}})
        ctx.reporter.event("info", f"edited at keep_mass={rho:g}", {"kind": "edit", "keep_mass": rho, "layers": layers})
        ctx.reporter.progress((i + 1) / len(sweep))
    return out
