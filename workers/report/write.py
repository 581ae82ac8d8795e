"""``write_report``: draw the plots and ``report.md`` into an artifact directory and return their
file entries (``{path, size, sha256}``) for the manifest, plus the data each plot shows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.artifact_index import file_entry
from workers.report.inputs import ReportInput
from workers.report.markdown import render_report
from workers.report.plots import plot_eigenspectra, plot_frontier, plot_kept_mass

REPORT_FILES = ("report.md", "frontier.png", "eigenspectra.png", "kept_mass.png")


@dataclass
class ReportOutput:
    files: list[dict[str, Any]]
    plotted: dict[str, Any] = field(default_factory=dict)
    markdown: str = ""


def _publish(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def write_report(directory: Path, inp: ReportInput) -> ReportOutput:
    """Write ``report.md`` and the PNGs into ``directory``. ``frontier.png`` is left out (and the
    report says why) when no edit has both a recitation rate and a perplexity increase."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plotted: dict[str, Any] = {}
    plots: list[tuple[str, str]] = []
    omitted: list[str] = []
    written: list[str] = []

    def draw(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        tmp = directory / f".{name}.tmp"
        try:
            data = fn(*args, tmp, **kw)
            _publish(tmp, directory / name)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(name)
        return data

    if any(p.has_frontier_coordinates() for p in inp.points):
        plotted["frontier"] = draw("frontier.png", plot_frontier, inp.points, inp.box)
        caption = "Forget-set strict recitation vs held-out perplexity increase"
        caption += " over all trials; box: targets; star: chosen" if inp.kind == "search" else " per sweep point"
        plots.append(("frontier.png", caption))
    elif inp.image_classifier:
        omitted.append(
            "frontier.png not drawn: it plots recitation against perplexity (text models); this image-classifier "
            "job's memorised-set and held-out accuracies are in the before/after table."
        )
    else:
        omitted.append(
            "frontier.png not drawn: the job measured no forget-set recitation together with held-out perplexity"
            " (give evaluation.recitation and evaluation.perplexity)."
        )
    plotted["eigenspectra"] = draw("eigenspectra.png", plot_eigenspectra, inp.spectra)
    plots.append(("eigenspectra.png", "Eigenvalues of A and G per edited target, with the kept-mass cut"))
    plotted["kept_mass"] = draw("kept_mass.png", plot_kept_mass, inp.selections)
    plots.append(("kept_mass.png", "Kept curvature mass and kept fraction of eigen-pairs per layer and projection"))
    text = render_report(inp, plots, omitted)
    tmp = directory / ".report.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    _publish(tmp, directory / "report.md")
    written.insert(0, "report.md")
    files = [file_entry(directory / name, name) for name in written]
    return ReportOutput(files=files, plotted=plotted, markdown=text)
