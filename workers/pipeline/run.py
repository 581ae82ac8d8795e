"""``run_pipeline``: one edit job, start to finish, against a ``Reporter`` (no Redis in here).

Stages, in order: ``load_model -> collect_factors -> eigendecompose -> edit -> evaluate -> export``.
Factors and eigenbases are computed (or fetched from the factor cache) once; for each
``keep_mass`` of a sweep the original weights are restored, the edit applied, the model evaluated
and one result exported. The whole output tree appears atomically at the end (staging directory
+ rename); a failure or cancellation leaves nothing behind.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from contract.results import JobResult, Metrics, OutputInfo, StageCache, SweepPoint, TargetInfo
from contract.search import SearchResult
from contract.settings import Settings
from contract.spec import EditJobSpec, KeepMassOverride
from workers.artifact_index import add_file_indexes
from workers.artifacts import library_versions, staging_dir, write_manifest, write_result
from workers.cache import FactorCache
from workers.cache.guarded import GuardedCache
from workers.curvature import EditTarget, Rotations, TargetError, apply_edit, resolve_targets
from workers.curvature.targets import num_layers
from workers.evaluation import compare
from workers.pipeline.confine import confined
from workers.pipeline.curvature_stage import ShardFanout, compute_curvature, curvature_inputs
from workers.pipeline.errors import PipelineError
from workers.pipeline.evaluation_stage import EvaluationSuite, resolve_evaluation
from workers.pipeline.fingerprint import combine, digest_memo_path, fingerprint_model_dir, fingerprint_texts
from workers.pipeline.loading import load_model
from workers.pipeline.report_stage import write_job_report
from workers.pipeline.reporting import JobCancelled, Reporter, Stage
from workers.pipeline.search_stage import candidate_layer_sets, goal_directed_edit, resolve_objective, search_targets
from workers.pipeline.sources import resolve_texts

EDITED_COPIES_BYTES = 4 * 2**30


def point_dirname(keep_mass: float) -> str:
    """Directory name of one sweep point's result, e.g. ``rho-0.6``: the shortest text that reads
    back as the same float, so distinct sweep values never share a directory."""
    return f"rho-{float(keep_mass)!r}"


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


class _Clock:
    """Stage bookkeeping: reports each stage and records its wall time."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.timings: dict[str, float] = {}
        self.cached: dict[str, bool] = {}
        self._current: tuple[str, float] | None = None

    def stage(self, name: Stage, cached: bool = False) -> None:
        self.close()
        self.reporter.stage(name, cached=cached)
        self.cached[name] = cached
        self._current = (name, time.perf_counter())

    def close(self) -> None:
        if self._current is not None:
            name, t0 = self._current
            self.timings[name] = round(time.perf_counter() - t0, 4)
            self._current = None


def _check_cancel(reporter: Reporter, where: str) -> None:
    if reporter.cancelled():
        raise JobCancelled(f"cancelled during {where}")


@torch.no_grad()
def _write_params(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    for name, value in values.items():
        params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))


def _snapshot(params: dict[str, torch.nn.Parameter], names: list[str]) -> dict[str, torch.Tensor]:
    return {n: params[n].detach().to("cpu", copy=True) for n in names}


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
        return _run(spec, settings=settings, job_id=job_id, reporter=reporter, cache=cache, fanout=fanout)


def _run(
    spec: EditJobSpec,
    *,
    settings: Settings,
    job_id: str,
    reporter: Reporter,
    cache: FactorCache | None,
    fanout: ShardFanout | None,
) -> dict[str, Any]:
    clock = _Clock(reporter)
    t_start = time.perf_counter()

    # ---- load_model (inputs are resolved first: bad input fails before any tensor work)
    clock.stage("load_model")
    out_rel = spec.output.path or job_id
    out_dir = confined(settings.output_root, out_rel, "output.path")
    if out_dir.exists():
        raise PipelineError("output_exists", f"output.path {out_rel!r} already exists under the output root")
    calib_texts = resolve_texts(spec.calibration, settings, "calibration")
    eval_data = resolve_evaluation(spec.evaluation, settings)
    objective = resolve_objective(spec.objective, settings) if spec.objective is not None else None
    loaded = load_model(spec.model, settings)
    model, tokenizer = loaded.model, loaded.tokenizer
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
    reporter.event(
        "info",
        f"loaded {loaded.label} ({loaded.dtype}, {loaded.device}); {len(targets)} target(s)",
        {"kind": "model", "targets": [t.name for t in targets], "fingerprint": fingerprints["model"]},
    )
    _check_cancel(reporter, "load_model")

    # ---- collect_factors + eigendecompose (cache-aware)
    inputs = curvature_inputs(spec, settings, loaded, calib_texts)
    guarded = (
        None if cache is None else GuardedCache(cache, lambda msg: reporter.event("warning", msg, {"kind": "cache"}))
    )
    curv = compute_curvature(
        model, targets, inputs, reporter=reporter, cache=guarded, on_stage=clock.stage, fanout=fanout
    )

    # ---- edit: one edited copy of the targets' weights per sweep point
    clock.stage("edit")
    search: dict[str, Any] | None = None
    sweep = spec.edit.sweep
    if objective is not None:  # the search picks the layers and rho; the chosen edit is made below
        found, targets = goal_directed_edit(
            objective, model, tokenizer, targets, curv.eigens, layer_sets, reporter, best_effort=spec.output.best_effort
        )
        search = found.model_dump(mode="json")
        assert found.chosen is not None
        sweep = [found.chosen.keep_mass]
    params = dict(model.named_parameters())
    pnames = [f"{t.name}.weight" for t in targets]
    originals = _snapshot(params, pnames)
    # A sweep rotates each target once (C = U_G^T W U_A of the originals) and reuses C per point.
    rotations = Rotations() if len(sweep) > 1 else None
    n_layers = num_layers(model)
    points: list[dict[str, Any]] = []
    # Edited copies are kept in host memory when they fit EDITED_COPIES_BYTES; otherwise a point is
    # re-edited from the originals when evaluate/export need it (two matrix products per layer).
    per_point = sum(params[n].numel() * params[n].element_size() for n in pnames)
    keep_copies = per_point * len(sweep) <= EDITED_COPIES_BYTES
    edited: list[dict[str, torch.Tensor] | None] = []
    for i, rho in enumerate(sweep):
        _check_cancel(reporter, "edit")
        _write_params(params, originals)
        reports = apply_edit(model, targets, curv.eigens, keep_mass_for(rho, spec.edit.overrides, n_layers), rotations)
        edited.append(_snapshot(params, pnames) if keep_copies else None)
        layers = [r.to_dict() for r in reports]
        points.append({"keep_mass": rho, "layers": layers, "metrics": {}, "comparison": [], "artifacts": {}})
        reporter.event("info", f"edited at keep_mass={rho:g}", {"kind": "edit", "keep_mass": rho, "layers": layers})
        reporter.progress((i + 1) / len(sweep))

    def load_point(i: int) -> dict[str, torch.Tensor]:
        """Put sweep point ``i``'s edited weights into the model; returns them (host copies)."""
        copy = edited[i]
        if copy is not None:
            _write_params(params, copy)
            return copy
        _write_params(params, originals)
        apply_edit(model, targets, curv.eigens, keep_mass_for(sweep[i], spec.edit.overrides, n_layers), rotations)
        return _snapshot(params, pnames)

    # ---- evaluate: baseline (and agreement reference) on the original weights, then each point
    clock.stage("evaluate")
    baseline: dict[str, Any] = {}
    if eval_data is None:
        reporter.event("info", "no evaluation requested", {"kind": "evaluate"})
    else:
        _write_params(params, originals)
        suite = EvaluationSuite(eval_data, model, tokenizer)
        suite.prepare_reference()
        baseline = suite.measure(with_agreement=False)
        reporter.event("info", "baseline metrics", {"kind": "metrics", "keep_mass": None, "metrics": baseline})
        for i, point in enumerate(points):
            _check_cancel(reporter, "evaluate")
            load_point(i)
            point["metrics"] = suite.measure()
            point["comparison"] = compare(baseline, point["metrics"])
            reporter.event(
                "info",
                f"metrics at keep_mass={point['keep_mass']:g}",
                {"kind": "metrics", "keep_mass": point["keep_mass"], "metrics": point["metrics"]},
            )
            reporter.progress((i + 1) / len(points))

    # ---- export: the whole tree is staged and renamed into place at the end
    clock.stage("export")
    resolved_spec = spec.model_dump(mode="json")
    common = {
        "format": "curvedit-manifest-v1",
        "job_id": job_id,
        "spec": resolved_spec,
        "model": {"label": loaded.label, "dtype": inputs.model_dtype},
        "fingerprints": fingerprints,
        "targets": [{"name": t.name, "layer": t.layer, "role": t.role, "shape": list(t.shape)} for t in targets],
        "baseline_metrics": baseline,
        "cache": curv.cache,
        "cache_keys": curv.keys,
        "cached_stages": dict(clock.cached),
        "versions": library_versions(),
    }
    if search is not None:
        common["search"] = search
    single = len(points) == 1
    with staging_dir(out_dir, attempt_tag=job_id) as tmp:
        common["report"] = write_job_report(
            tmp,
            job_id=job_id,
            model_label=loaded.label,
            points=points,
            baseline=baseline,
            targets=targets,
            eigens=curv.eigens,
            search=common.get("search"),
            spec=resolved_spec,
        ).files
        for i, point in enumerate(points):
            _check_cancel(reporter, "export")
            edited_now = load_point(i)
            sub = "" if single else point_dirname(point["keep_mass"])
            target_dir = tmp / sub if sub else tmp
            manifest = {
                **common,
                "keep_mass": point["keep_mass"],
                "layers": point["layers"],
                "metrics": point["metrics"],
                "comparison": point["comparison"],
        "factor_stats": curv.factor_stats,
                "timings": dict(clock.timings),
            }
            files = write_result(
                target_dir,
                model=model,
                tokenizer=tokenizer,
                originals=originals,
                edited=edited_now,
                manifest=manifest,
                save_model=spec.output.save_model,
                save_delta=spec.output.save_delta,
            )
            final = out_dir / sub if sub else out_dir
            point["artifacts"] = {
                "dir": str(final),
                "relative_dir": str(Path(out_rel) / sub) if sub else out_rel,
                **{k: str(final / v) if v != "." else str(final) for k, v in files.items()},
            }
            reporter.progress((i + 1) / len(points))
        if not single:
            write_manifest(
                tmp,
                {
                    **common,
                    "sweep": [
                        {k: p[k] for k in ("keep_mass", "layers", "metrics", "comparison")}
                        | {"dir": point_dirname(p["keep_mass"])}
                        for p in points
                    ],
                    "timings": dict(clock.timings),
                },
            )
        add_file_indexes(tmp)  # every manifest lists its tree's files with sha256 (served over HTTP)
    clock.close()
    _write_params(params, originals)
    clock.timings["total"] = round(time.perf_counter() - t_start, 4)
    result = JobResult(
        results=[SweepPoint.model_validate(p) for p in points],
        baseline=Metrics.model_validate(baseline),
        cache={stage: StageCache.model_validate(c) for stage, c in curv.cache.items()},
        cached_stages=dict(clock.cached),
        timings=dict(clock.timings),
        tokens=curv.tokens,
        targets=[TargetInfo.model_validate(t) for t in common["targets"]],
        fingerprints={"model": fingerprints["model"], "calibration": fingerprints["calibration"]},
        output=OutputInfo(dir=str(out_dir), relative_dir=out_rel, sweep=not single),
        **({"search": SearchResult.model_validate(search)} if search is not None else {}),
    )
    return result.to_json()
