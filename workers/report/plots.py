"""The three report plots, drawn headless (Agg) into PNG files. Each function returns the data it
plotted (coordinates, cuts, series), so tests check the numbers rather than pixels.

- ``plot_frontier``: forget-set strict recitation vs held-out perplexity increase, one marker per
  evaluated edit (colour = layer set; ``x`` = infeasible; hollow = screening trial), the target box
  and the chosen edit (star).
- ``plot_eigenspectra``: per edited target, the A and G eigenvalues (log scale) with the directions
  the kept-mass selection keeps drawn solid, the dropped tail faded, the cut marked.
- ``plot_kept_mass``: per target, the kept curvature-mass fraction and the kept fraction of pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: workers have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from workers.report.inputs import ReportPoint, Selection, Spectrum, TargetBox  # noqa: E402
from workers.report.spectra import cutoff, descending  # noqa: E402

MAX_SPECTRA = 24
DPI = 110


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)


def plot_frontier(
    points: Sequence[ReportPoint], box: TargetBox | None, path: Path, *, title: str = ""
) -> dict[str, Any]:
    """Draw the frontier; returns ``{"points": [...], "chosen": {...} | None, "box": {...} | None,
    "xscale": str}`` with x = perplexity increase in %, y = strict recitation in %."""
    drawn = [p for p in points if p.has_frontier_coordinates()]
    fig, ax = plt.subplots(figsize=(8.0, 5.5))
    sets = list(dict.fromkeys(p.layers for p in drawn))
    colours = plt.get_cmap("tab10" if len(sets) <= 10 else "tab20")
    data: dict[str, Any] = {"points": [], "chosen": None, "box": None}
    xs = [100.0 * float(p.ppl_increase) for p in drawn]  # type: ignore[arg-type]
    xscale = "symlog" if xs and (max(xs) > 50.0 or min(xs) < -50.0) else "linear"
    spots: dict[tuple[float, float], dict[str, list[str]]] = {}
    for k, layers in enumerate(sets):
        group = sorted((p for p in drawn if p.layers == layers), key=lambda p: p.keep_mass)
        colour = colours(k % colours.N)
        gx = [100.0 * float(p.ppl_increase) for p in group]  # type: ignore[arg-type]
        gy = [100.0 * float(p.strict_rate) for p in group]  # type: ignore[arg-type]
        ax.plot(gx, gy, "-", color=colour, alpha=0.35, linewidth=1)
        label_done = False
        for p, x, y in zip(group, gx, gy, strict=True):
            marker = "x" if p.feasible is False else "o"
            hollow = p.stage == "screen" and marker == "o"
            ax.scatter(
                [x],
                [y],
                marker=marker,
                s=36,
                color=colour,
                facecolors="none" if hollow else colour,
                label=None if label_done else f"layers {p.layer_label}",
                zorder=3,
            )
            label_done = True
            data["points"].append(
                {
                    "x": x,
                    "y": y,
                    "layers": list(p.layers),
                    "keep_mass": p.keep_mass,
                    "feasible": p.feasible,
                    "chosen": p.chosen,
                }
            )
        for p, x, y in zip(group, gx, gy, strict=True):
            spots.setdefault((round(x, 1), round(y, 1)), {}).setdefault(p.layer_label, []).append(f"{p.keep_mass:.4g}")
    if len(drawn) <= 30:  # one label per spot: points that coincide share it
        for (x, y), by_set in spots.items():
            parts = []
            for layer_label, rhos in by_set.items():
                text = "ρ=" + ", ".join(rhos[:4]) + (f" (+{len(rhos) - 4})" if len(rhos) > 4 else "")
                parts.append(f"L{layer_label} {text}" if len(sets) > 1 else text)
            ax.annotate("; ".join(parts), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if box is not None and (box.max_strict_rate is not None or box.max_ppl_increase is not None):
        ycap = 100.0 * box.max_strict_rate if box.max_strict_rate is not None else 100.0
        xcap = 100.0 * box.max_ppl_increase if box.max_ppl_increase is not None else max([*xs, 1.0])
        low = min([*xs, 0.0])
        xlo = low - 0.05 * max(max([*xs, 0.0]) - low, 0.1) if low < 0 else 0.0
        ax.add_patch(
            Rectangle(
                (xlo, -2.0),
                xcap - xlo,
                ycap + 2.0,
                facecolor="tab:green",
                alpha=0.12,
                edgecolor="tab:green",
                linestyle="--",
                label=f"target box (strict ≤ {ycap:g} %, ppl ≤ {xcap:+g} %)",
                zorder=1,
            )
        )
        data["box"] = {"x_max": xcap, "y_max": ycap}
        if xs and xscale == "linear":  # a cap far beyond every trial would squash the trials to a line
            span = max(max(xs) - xlo, 1e-3)
            if xcap > max(xs) + 2 * span:
                ax.set_xlim(xlo - 0.05 * span, max(xs) + 0.5 * span)
                data["box"]["clipped"] = True
    chosen = next((p for p in drawn if p.chosen), None)
    if chosen is not None:
        cx, cy = 100.0 * float(chosen.ppl_increase), 100.0 * float(chosen.strict_rate)  # type: ignore[arg-type]
        ax.scatter([cx], [cy], marker="*", s=320, color="gold", edgecolors="black", zorder=5, label="chosen")
        ax.annotate(
            f"chosen: layers {chosen.layer_label}, ρ={chosen.keep_mass:g}\nstrict {cy:.1f} %, ppl {cx:+.1f} %",
            (cx, cy),
            textcoords="offset points",
            xytext=(12, 14),
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
            zorder=6,
        )
        data["chosen"] = {"x": cx, "y": cy, "layers": list(chosen.layers), "keep_mass": chosen.keep_mass}
    if xscale == "symlog":
        ax.set_xscale("symlog", linthresh=1.0)
    data["xscale"] = xscale
    ax.set_ylim(-2.0, 102.0)
    ax.set_xlabel("held-out perplexity increase (%)" + (" — symlog scale" if xscale == "symlog" else ""))
    ax.set_ylabel("forget-set strict recitation (%)")
    ax.set_title(title or "Forget vs retain frontier")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)
    return data


def plot_eigenspectra(spectra: Sequence[Spectrum], path: Path, *, title: str = "") -> dict[str, Any]:
    """Draw up to ``MAX_SPECTRA`` targets' spectra; returns ``{"targets": [{label, a, g, cut}],
    "omitted": n}`` where ``a`` / ``g`` are the plotted descending eigenvalues."""
    shown = list(spectra)[:MAX_SPECTRA]
    n = max(len(shown), 1)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    out: dict[str, Any] = {"targets": [], "omitted": max(len(spectra) - len(shown), 0)}
    for ax, spec in zip(axes.ravel(), shown, strict=False):
        a = descending(spec.a_values)
        g = descending(spec.g_values)
        cut = cutoff(spec)
        for values, rank, colour, name in ((a, cut.rank_in, "tab:blue", "A"), (g, cut.rank_out, "tab:orange", "G")):
            ranks = np.arange(1, values.size + 1)
            shown_vals = np.where(values > 0, values, np.nan)
            ax.plot(ranks[:rank], shown_vals[:rank], "-", color=colour, label=f"{name}: {rank}/{values.size} kept")
            tail = max(rank - 1, 0)
            ax.plot(ranks[tail:], shown_vals[tail:], ":", color=colour, alpha=0.45)
            if rank:
                ax.axvline(rank, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
                if np.isfinite(shown_vals[rank - 1]):
                    ax.scatter([rank], [shown_vals[rank - 1]], color=colour, s=16, zorder=3)
        ax.set_yscale("log", nonpositive="mask")
        ax.set_xscale("log")
        tau = "nothing kept" if cut.tau is None else f"kept λμ ≥ {cut.tau:.2e}"
        ax.set_title(f"{spec.label}  ρ={spec.keep_mass:g}\n{tau}", fontsize=9)
        ax.set_xlabel("eigen-direction rank", fontsize=8)
        ax.set_ylabel("eigenvalue", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        out["targets"].append({"label": spec.label, "name": spec.name, "a": a, "g": g, "cut": cut})
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no edited targets", ha="center", va="center")
    suffix = f" (first {len(shown)} of {len(spectra)} targets)" if out["omitted"] else ""
    fig.suptitle(
        (title or "Eigenspectra of A (layer inputs) and G (output gradients)")
        + suffix
        + "\nsolid: directions in a kept pair; dotted: dropped tail; dashed line: the cut",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path)
    return out


def plot_kept_mass(selections: Sequence[Selection], path: Path, *, title: str = "") -> dict[str, Any]:
    """Per target (``L<layer>.<role>``), kept mass fraction and kept fraction of pairs for every
    selection; one selection: bars, several: one line each coloured by keep_mass. Returns
    ``{"targets": [...], "series": [{label, keep_mass, kept_mass, kept_pairs_fraction}]}``."""

    def label(row: dict[str, Any]) -> str:
        if row.get("layer") is not None and row.get("role") is not None:
            return f"L{row['layer']}.{row['role']}"
        return str(row["name"])

    targets = list(dict.fromkeys(label(r) for s in selections for r in s.layers))
    series: list[dict[str, Any]] = []
    for sel in selections:
        by = {label(r): r for r in sel.layers}
        series.append(
            {
                "label": sel.label,
                "keep_mass": sel.keep_mass,
                "kept_mass": [by[t]["kept_mass_fraction"] if t in by else math.nan for t in targets],
                "kept_pairs_fraction": [
                    by[t]["kept_pairs"] / by[t]["total_pairs"] if t in by and by[t]["total_pairs"] else math.nan
                    for t in targets
                ],
            }
        )
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(6.5, 0.55 * len(targets) + 3.5), 6.5), sharex=True, layout="constrained"
    )
    x = np.arange(len(targets))
    if len(series) == 1:
        s: dict[str, Any] = series[0]
        top.bar(x, s["kept_mass"], color="tab:blue")
        bottom.bar(x, s["kept_pairs_fraction"], color="tab:orange")
        for xi, v in zip(x, s["kept_mass"], strict=True):
            if math.isfinite(v):
                top.annotate(f"{v:.3f}", (xi, v), ha="center", va="bottom", fontsize=7)
        for xi, v in zip(x, s["kept_pairs_fraction"], strict=True):
            if math.isfinite(v):
                bottom.annotate(f"{v:.2%}", (xi, v), ha="center", va="bottom", fontsize=7)
        top.axhline(s["keep_mass"], color="black", linestyle="--", linewidth=0.8, label=f"ρ = {s['keep_mass']:g}")
        top.legend(fontsize=7)
        finite = [v for v in s["kept_pairs_fraction"] if math.isfinite(v)]
        bottom.set_ylim(0, 1.15 * max(finite) if finite and max(finite) > 0 else 1.0)
    else:
        rhos = [float(ser["keep_mass"]) for ser in series]
        norm = matplotlib.colors.Normalize(vmin=min(rhos), vmax=max(rhos) if max(rhos) > min(rhos) else min(rhos) + 1)
        cmap = plt.get_cmap("viridis")
        for s in series:
            colour = cmap(norm(s["keep_mass"]))
            top.plot(x, s["kept_mass"], "o-", color=colour, markersize=3, linewidth=1)
            bottom.plot(x, s["kept_pairs_fraction"], "o-", color=colour, markersize=3, linewidth=1)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=[top, bottom], label="keep_mass ρ")
    top.set_ylabel("kept curvature mass")
    top.set_ylim(0, 1.08)
    bottom.set_ylabel("kept fraction of pairs")
    if len(series) > 1:
        bottom.set_yscale("log", nonpositive="mask")
    bottom.set_xticks(x, targets, rotation=45, ha="right", fontsize=8)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.set_title(title or "Kept curvature mass and kept eigen-pairs\nper layer and projection", fontsize=10)
    _save(fig, path)
    return {"targets": targets, "series": series}
