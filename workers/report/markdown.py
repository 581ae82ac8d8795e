"""``report.md``: the chosen edit, the before/after table, the per-target selection, every
evaluated edit (trials or sweep points) and the plots, as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.evaluation.report import render_table
from workers.report.inputs import ReportInput, ReportPoint


def pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100.0 * value:+.1f} %" if signed else f"{100.0 * value:.1f} %"


def _feasible(p: ReportPoint) -> str:
    return "–" if p.feasible is None else ("yes" if p.feasible else "no")


def points_table(points: Sequence[ReportPoint]) -> str:
    head = "| # | layers | projections | ρ (keep_mass) | stage | strict | loose | ppl increase | feasible | chosen |"
    lines = [head, "|---:|---|---|---:|---|---:|---:|---:|---|---|"]
    for i, p in enumerate(points, 1):
        lines.append(
            f"| {i} | {p.layer_label} | {','.join(p.projections) or '–'} | {p.keep_mass:g} | {p.stage or '–'} "
            f"| {pct(p.strict_rate)} | {pct(p.loose_rate)} | {pct(p.ppl_increase, signed=True)} "
            f"| {_feasible(p)} | {'**chosen**' if p.chosen else ''} |"
        )
    return "\n".join(lines)


def selection_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| target | ρ | kept pairs | kept mass | rank out / in | relative weight change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        total = r.get("total_pairs") or 0
        frac = f" ({r['kept_pairs'] / total:.2%})" if total else ""
        lines.append(
            f"| {r['name']} | {r['keep_mass']:g} | {r['kept_pairs']}{frac} | {r['kept_mass_fraction']:.4f} "
            f"| {r['rank_out']} / {r['rank_in']} | {r['relative_change']:.4f} |"
        )
    return "\n".join(lines)


def render_report(inp: ReportInput, plots: Sequence[tuple[str, str]], omitted_plots: Sequence[str] = ()) -> str:
    """The Markdown text; ``plots`` is ``[(file name, caption)]`` of the PNGs written beside it."""
    out = [f"# Edit report — job `{inp.job_id}`", "", f"Model: `{inp.model_label}`", ""]
    chosen = inp.chosen
    if inp.kind == "search":
        n = len(inp.points)
        if inp.met:
            out += [f"**Objective met** after {n} trial(s)."]
        else:
            out += [f"**Objective not met** (`objective_not_met`) after {n} trial(s); no trial met every target."]
        if inp.box is not None:
            out += [
                "",
                f"Targets: strict recitation ≤ {pct(inp.box.max_strict_rate)}, "
                f"perplexity increase ≤ {pct(inp.box.max_ppl_increase, signed=True)}.",
            ]
        out.append("")
    if chosen is not None:
        heading = "## Chosen edit" if inp.kind == "search" else "## Edit"
        out += [
            heading,
            "",
            f"- layers: {chosen.layer_label}",
            f"- projections: {', '.join(chosen.projections) or '–'}",
            f"- keep_mass ρ: {chosen.keep_mass:g}",
            f"- forget-set strict recitation: {pct(chosen.strict_rate)}",
            f"- loose recitation: {pct(chosen.loose_rate)}",
            f"- held-out perplexity increase: {pct(chosen.ppl_increase, signed=True)}",
            "",
        ]
    elif inp.kind == "sweep":
        out += [f"## Sweep over {len(inp.points)} keep_mass values", "", "Nothing is chosen in a plain sweep.", ""]
        out += [points_table(inp.points), ""]
    if inp.comparison:
        out += ["## Before / after", "", render_table(list(inp.comparison)), ""]
    for rho, rows in inp.sweep_comparisons:
        out += [f"### Before / after at ρ = {rho:g}", "", render_table(list(rows)), ""]
    chosen_sel = next((s for s in inp.selections if chosen is not None and s.keep_mass == chosen.keep_mass), None)
    if chosen_sel is None and len(inp.selections) == 1:
        chosen_sel = inp.selections[0]
    if chosen_sel is not None and chosen_sel.layers:
        out += ["## Per-target selection", "", selection_table(chosen_sel.layers), ""]
    if inp.kind != "sweep":
        out += [f"## {'Trials' if inp.kind == 'search' else 'Evaluated edit'}", "", points_table(inp.points), ""]
    if plots or omitted_plots:
        out += ["## Plots", ""]
        for name, caption in plots:
            out += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        out += [f"- {note}" for note in omitted_plots]
        if omitted_plots:
            out.append("")
    if inp.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in inp.notes] + [""]
    return "\n".join(out)
