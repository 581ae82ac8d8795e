"""Export-stage glue: turn what the pipeline holds (sweep points or the search result, the edited
targets' eigenbases, per-target selection reports, before/after rows) into ``workers.report``'s
plain inputs and write ``report.md`` + plots into the staging directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workers.curvature import EditTarget
from workers.curvature.eigen import Eigen
from workers.report import ReportInput, ReportPoint, Selection, Spectrum, TargetBox, write_report
from workers.report.write import ReportOutput

MAX_SWEEP_TABLES = 12


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def ppl_increase(baseline: Mapping[str, Any], metrics: Mapping[str, Any]) -> float | None:
    """Relative held-out perplexity increase of ``metrics`` over ``baseline`` (None if not measured)."""
    before = _get(baseline, "perplexity", "perplexity")
    after = _get(metrics, "perplexity", "perplexity")
    if before is None or after is None or before == 0:
        return None
    return float(after) / float(before) - 1.0


def sweep_points(points: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any]) -> list[ReportPoint]:
    """Report points of a plain job (one point: it is the edit, marked chosen; several: a sweep)."""
    out = []
    for p in points:
        rows = p.get("layers") or []
        out.append(
            ReportPoint(
                layers=tuple(sorted({int(r["layer"]) for r in rows if r.get("layer") is not None})),
                projections=tuple(dict.fromkeys(str(r["role"]) for r in rows if r.get("role") is not None)),
                keep_mass=float(p["keep_mass"]),
                strict_rate=_get(p.get("metrics"), "recitation", "strict_rate"),
                loose_rate=_get(p.get("metrics"), "recitation", "loose_rate"),
                ppl_increase=ppl_increase(baseline, p.get("metrics") or {}),
                chosen=len(points) == 1,
            )
        )
    return out


def search_points(search: Mapping[str, Any]) -> list[ReportPoint]:
    """Report points of a goal-directed search (``SearchResult`` as JSON): every trial; the chosen
    one (same ``index``) marked."""
    chosen_index = _get(search, "chosen", "index")
    return [
        ReportPoint(
            layers=tuple(int(x) for x in t["layers"]),
            projections=tuple(t.get("projections") or ()),
            keep_mass=float(t["keep_mass"]),
            strict_rate=_get(t, "metrics", "strict_rate"),
            loose_rate=_get(t, "metrics", "loose_rate"),
            ppl_increase=_get(t, "metrics", "perplexity_increase"),
            feasible=t.get("feasible"),
            chosen=chosen_index is not None and t.get("index") == chosen_index,
            stage=t.get("stage"),
        )
        for t in search.get("trials") or []
    ]


def spectra_for(
    targets: Sequence[EditTarget], eigens: Mapping[str, tuple[Eigen, Eigen]], layer_rows: Sequence[Mapping[str, Any]]
) -> list[Spectrum]:
    """One spectrum per edited target, cut at the keep_mass that target was edited with."""
    rho = {str(r["name"]): float(r["keep_mass"]) for r in layer_rows}
    out = []
    for t in targets:
        if t.name not in eigens:
            continue
        g_eig, a_eig = eigens[t.name]
        out.append(
            Spectrum(
                name=t.name,
                layer=t.layer,
                role=t.role,
                a_values=a_eig.values.detach().double().cpu().numpy(),
                g_values=g_eig.values.detach().double().cpu().numpy(),
                keep_mass=rho.get(t.name, 1.0),
            )
        )
    return out


def write_job_report(
    directory: Path,
    *,
    job_id: str,
    model_label: str,
    points: Sequence[Mapping[str, Any]],
    baseline: Mapping[str, Any],
    targets: Sequence[EditTarget],
    eigens: Mapping[str, tuple[Eigen, Eigen]],
    search: Any = None,
    spec: Mapping[str, Any] | None = None,
) -> ReportOutput:
    """Write the report of one job into ``directory`` (the top of its artifact tree). ``search``
    is the ``SearchResult`` as JSON (goal-directed jobs); ``spec`` the resolved job spec as JSON
    (its ``objective`` gives the target box)."""
    notes: list[str] = []
    box = None
    objective = (spec or {}).get("objective")
    if isinstance(search, Mapping):
        kind = "search"
        rpoints = search_points(search)
        if objective:
            box = TargetBox(
                _get(objective, "forget", "max_strict_rate"), _get(objective, "retain", "max_perplexity_increase")
            )
            if _get(objective, "forget", "max_strict_rate") is None:
                notes.append("the forget target is a loose-recitation cap; the frontier shows strict recitation")
        notes.append(
            "Frontier coordinates are the trials' own measurements (screening trials on subsampled sets); "
            "the before/after table is the exported edit measured by evaluation."
        )
    else:
        kind = "single" if len(points) == 1 else "sweep"
        rpoints = sweep_points(points, baseline)
    # The spectra are cut where the exported edit (or, for a sweep, the median sweep point) cut them.
    middle = points[len(points) // 2] if points else {}
    if kind == "sweep" and points:
        notes.append(f"eigenspectra.png marks the cut of the median sweep point (ρ = {float(middle['keep_mass']):g}).")
    spectra = spectra_for(targets, eigens, middle.get("layers") or [])
    selections = [
        Selection(f"ρ={float(p['keep_mass']):g}", float(p["keep_mass"]), list(p.get("layers") or [])) for p in points
    ]
    comparison = points[0].get("comparison") if len(points) == 1 else None
    sweep_tables: list[tuple[float, Sequence[Mapping[str, Any]]]] = []
    if kind == "sweep":
        if len(points) <= MAX_SWEEP_TABLES:
            sweep_tables = [(float(p["keep_mass"]), p["comparison"]) for p in points if p.get("comparison")]
        else:
            notes.append("each sweep point's before/after table is in its rho-*/manifest.json (comparison)")
    inp = ReportInput(
        job_id=job_id,
        model_label=model_label,
        kind=kind,
        points=rpoints,
        spectra=spectra,
        selections=selections,
        box=box,
        comparison=comparison or None,
        sweep_comparisons=sweep_tables,
        met=bool(search.get("met")) if isinstance(search, Mapping) else None,
        notes=notes,
        image_classifier=bool(_get(spec or {}, "calibration", "images")),
    )
    return write_report(directory, inp)
