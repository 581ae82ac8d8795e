"""Report and plots: files written and listed in the manifest with their sha256, report.md holds the
edit and the before/after table of the result, the plotted data equals the result's numbers, and
the kept-mass cut drawn on the spectra agrees with a brute-force selection over every pair."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.settings import Settings
from contract.spec import EditJobSpec
from tests.tiny_models import save_tiny
from workers.evaluation.report import render_table
from workers.pipeline.report_stage import search_points, sweep_points
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline
from workers.report import REPORT_FILES, ReportInput, ReportPoint, Selection, Spectrum, TargetBox, write_report
from workers.report.plots import plot_eigenspectra, plot_frontier
from workers.report.spectra import cutoff

TEXTS = [f"note {i}: alice sends bob a letter about the weather in paris, day {i}" for i in range(60)]
PAIRS = [{"prefix": f"note {i}: alice sends bob", "suffix": " a letter about the weather"} for i in range(6)]
HELDOUT = [f"carol reads a long book about trains and rivers, chapter {i}" for i in range(20)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def brute_force_cut(g: np.ndarray, a: np.ndarray, rho: float) -> tuple[int, int, int, float]:
    """Every product listed and sorted (row-major among ties); the shortest prefix reaching rho of
    the total mass. Returns (rank_in, rank_out, kept_pairs, smallest kept product)."""
    g, a = np.sort(g)[::-1], np.sort(a)[::-1]
    prods = [(-(g[i] * a[j]), i, j) for i in range(g.size) for j in range(a.size)]
    prods.sort()
    total = g.sum() * a.sum()
    acc, kept = 0.0, []
    for p, i, j in prods:
        if acc >= rho * total:
            break
        acc += -p
        kept.append((i, j, -p))
    return (
        len({j for _, j, _ in kept}),
        len({i for i, _, _ in kept}),
        len(kept),
        min(p for *_, p in kept),
    )


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.95])
def test_spectrum_cut_matches_brute_force(rho: float) -> None:
    rng = np.random.default_rng(int(rho * 100))
    g, a = rng.exponential(size=9) ** 2, rng.exponential(size=7) ** 2
    cut = cutoff(Spectrum("w", 0, "up", a_values=a, g_values=g, keep_mass=rho))
    rank_in, rank_out, kept, tau = brute_force_cut(g, a, rho)
    assert (cut.rank_in, cut.rank_out, cut.kept_pairs) == (rank_in, rank_out, kept)
    assert cut.tau == pytest.approx(tau, rel=1e-12)


def _synthetic_input(tmp: Path) -> ReportInput:
    pts = []
    for layers in ((0,), (1, 2)):
        for rho in (0.6, 0.8, 0.95):
            strict = 0.0 if rho < 0.9 else 0.5
            ppl = (1 - rho) * (2.0 if layers == (0,) else 0.2)
            pts.append(
                ReportPoint(layers, ("gate", "up"), rho, strict, strict, ppl, strict <= 0.05 and ppl <= 0.1, False)
            )
    pts[4] = ReportPoint((1, 2), ("gate", "up"), 0.8, 0.0, 0.0, 0.04, True, True, "confirm")
    rng = np.random.default_rng(0)
    spectra = [
        Spectrum(f"t{k}", k, "up", rng.exponential(size=16), rng.exponential(size=24), keep_mass=0.8) for k in (1, 2)
    ]
    rows = [
        {
            "name": f"t{k}",
            "layer": k,
            "role": "up",
            "keep_mass": 0.8,
            "kept_pairs": 40 + k,
            "total_pairs": 384,
            "kept_mass_fraction": 0.8,
            "rank_out": 12,
            "rank_in": 9,
            "relative_change": 0.2,
        }
        for k in (1, 2)
    ]
    return ReportInput(
        job_id="job_test",
        model_label="tiny",
        kind="search",
        points=pts,
        spectra=spectra,
        selections=[Selection("chosen", 0.8, rows)],
        box=TargetBox(0.05, 0.10),
        met=True,
    )


def test_plot_data_is_the_input(tmp_path: Path) -> None:
    inp = _synthetic_input(tmp_path)
    data = plot_frontier(inp.points, inp.box, tmp_path / "f.png")
    expected = sorted(inp.points, key=lambda p: (p.layers != (0,), p.keep_mass))
    assert [v for d in data["points"] for v in (d["x"], d["y"])] == pytest.approx(
        [v for p in expected for v in (100 * p.ppl_increase, 100 * p.strict_rate)]
    )
    assert [d["chosen"] for d in data["points"]] == [p.chosen for p in expected]
    assert data["chosen"] == {"x": pytest.approx(4.0), "y": 0.0, "layers": [1, 2], "keep_mass": 0.8}
    assert data["box"] == {"x_max": pytest.approx(10.0), "y_max": pytest.approx(5.0)}
    spec_data = plot_eigenspectra(inp.spectra, tmp_path / "e.png")
    for drawn, spec in zip(spec_data["targets"], inp.spectra, strict=True):
        assert np.array_equal(drawn["a"], np.sort(spec.a_values)[::-1])
        rank_in, rank_out, kept, _ = brute_force_cut(spec.g_values, spec.a_values, spec.keep_mass)
        assert (drawn["cut"].rank_in, drawn["cut"].rank_out, drawn["cut"].kept_pairs) == (rank_in, rank_out, kept)


def test_write_report_files_and_hashes(tmp_path: Path) -> None:
    out = write_report(tmp_path, _synthetic_input(tmp_path))
    assert [f["path"] for f in out.files] == list(REPORT_FILES)
    for f in out.files:
        path = tmp_path / f["path"]
        assert f["sha256"] == sha(path) and f["size"] == path.stat().st_size
        if path.suffix == ".png":
            with Image.open(path) as img:
                assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    text = (tmp_path / "report.md").read_text()
    assert "**Objective met** after 6 trial(s)." in text
    assert "- layers: 1,2" in text and "- keep_mass ρ: 0.8" in text
    for name in ("frontier.png", "eigenspectra.png", "kept_mass.png"):
        assert f"]({name})" in text


def test_no_frontier_without_recitation_and_perplexity(tmp_path: Path) -> None:
    inp = _synthetic_input(tmp_path)
    inp.points = [ReportPoint((0,), ("up",), 0.9, None, None, None)]
    out = write_report(tmp_path, inp)
    assert "frontier.png" not in [f["path"] for f in out.files]
    assert not (tmp_path / "frontier.png").exists()
    assert "frontier.png not drawn" in out.markdown


def test_search_points_mark_the_chosen_trial() -> None:
    trial = {
        "index": 2,
        "layers": [1],
        "projections": ["up"],
        "keep_mass": 0.9,
        "stage": "confirm",
        "metrics": {"strict_rate": 0.02, "loose_rate": 0.1, "perplexity_increase": 0.03},
        "feasible": True,
    }
    other = trial | {"index": 1, "stage": "screen", "feasible": False}
    pts = search_points({"trials": [other, trial], "chosen": trial, "met": True})
    assert [p.chosen for p in pts] == [False, True]
    assert (pts[1].strict_rate, pts[1].ppl_increase, pts[1].stage) == (0.02, 0.03, "confirm")


def test_search_frontier_marks_the_chosen_trial_at_its_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    trials = []
    for k in range(1, 13):
        strict, ppl = float(rng.uniform(0, 0.3)), float(rng.uniform(-0.01, 0.5))
        feasible = strict <= 0.05 and ppl <= 0.1
        trials.append(
            {
                "index": k,
                "layers": [k % 3],
                "projections": ["gate", "up"],
                "keep_mass": float(rng.uniform(0.5, 1.0)),
                "stage": "screen" if k < 10 else "confirm",
                "metrics": {"strict_rate": strict, "loose_rate": strict, "perplexity_increase": ppl},
                "feasible": feasible,
            }
        )
    chosen = trials[10]
    pts = search_points({"trials": trials, "chosen": chosen, "met": True})
    data = plot_frontier(pts, TargetBox(0.05, 0.1), tmp_path / "f.png")
    assert data["chosen"]["x"] == pytest.approx(100 * chosen["metrics"]["perplexity_increase"])
    assert data["chosen"]["y"] == pytest.approx(100 * chosen["metrics"]["strict_rate"])
    assert data["chosen"]["layers"] == chosen["layers"] and data["chosen"]["keep_mass"] == chosen["keep_mass"]
    assert len(data["points"]) == len(trials)
    assert sorted((d["x"], d["y"]) for d in data["points"]) == sorted(
        (100 * t["metrics"]["perplexity_increase"], 100 * t["metrics"]["strict_rate"]) for t in trials
    )


# ---- through the pipeline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    save_tiny(root / "models" / "tiny", "llama")
    (root / "data").mkdir()
    return root


def _run(root: Path, job: str, **edit: object) -> dict:
    settings = Settings(
        model_root=root / "models",
        data_root=root / "data",
        output_root=root / "out",
        dataset_dir=root / "datasets",
        device="cpu",
    )
    spec = EditJobSpec.model_validate(
        {
            "model": {"path": "tiny"},
            "calibration": {"texts": TEXTS, "max_tokens": 800, "seq_len": 16, "batch_size": 8},
            "edit": {"layers": [2, 3], **edit},
            "evaluation": {
                "recitation": {"pairs": PAIRS, "prefix_tokens": 8, "suffix_tokens": 6},
                "perplexity": {"texts": HELDOUT, "seq_len": 16, "max_tokens": 400},
            },
        }
    )
    return run_pipeline(spec, settings=settings, job_id=job, reporter=NullReporter(), cache=None)


def _check_index(directory: Path, manifest: dict) -> None:
    """The manifest lists every file of its directory tree (itself excepted) with the right hash."""
    on_disk = sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.relative_to(directory).as_posix() != "manifest.json"
    )
    assert [f["path"] for f in manifest["files"]] == on_disk
    for f in manifest["files"]:
        assert f["sha256"] == sha(directory / f["path"]) and f["size"] == (directory / f["path"]).stat().st_size


def test_single_edit_exports_report_and_plots(roots: Path) -> None:
    result = _run(roots, "single", keep_mass=0.7)
    out = Path(result["output"]["dir"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in manifest["report"]] == list(REPORT_FILES)
    for f in manifest["report"]:
        assert f["sha256"] == sha(out / f["path"])
    _check_index(out, manifest)
    assert {"model.safetensors", "delta.safetensors", "report.md"} <= {f["path"] for f in manifest["files"]}
    point = result["results"][0]
    text = (out / "report.md").read_text()
    assert render_table(point["comparison"]) in text  # the before/after table of the result
    assert "- keep_mass ρ: 0.7" in text and "- layers: 2,3" in text
    # what the frontier shows for the edit is the result's own numbers
    (rp,) = sweep_points(result["results"], result["baseline"])
    strict = point["metrics"]["recitation"]["strict_rate"]
    ratio = point["metrics"]["perplexity"]["perplexity"] / result["baseline"]["perplexity"]["perplexity"]
    data = plot_frontier([rp], None, roots / "check.png")
    assert data["chosen"]["y"] == pytest.approx(100 * strict)
    assert data["chosen"]["x"] == pytest.approx(100 * (ratio - 1))
    assert f"{100 * strict:.1f} %" in text


def test_sweep_exports_one_report_and_nested_indexes(roots: Path) -> None:
    result = _run(roots, "sweep", keep_mass=[0.5, 0.9])
    out = Path(result["output"]["dir"])
    top = json.loads((out / "manifest.json").read_text())
    _check_index(out, top)
    assert {"rho-0.5/manifest.json", "rho-0.9/model.safetensors", "frontier.png"} <= {f["path"] for f in top["files"]}
    for sub in ("rho-0.5", "rho-0.9"):
        _check_index(out / sub, json.loads((out / sub / "manifest.json").read_text()))
    text = (out / "report.md").read_text()
    assert "## Sweep over 2 keep_mass values" in text
    for point in result["results"]:
        assert render_table(point["comparison"]) in text
    pts = sweep_points(result["results"], result["baseline"])
    assert [p.keep_mass for p in pts] == [0.5, 0.9] and not any(p.chosen for p in pts)
