"""``curvedit edit``: the pipeline in-process (no gateway, no Redis) on a tiny saved model, with the
before/after table printed and the artifacts written; pipeline input errors exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.app import app

runner = CliRunner()


@pytest.fixture
def roots(tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("models", "data", "out", "state"):
        (tmp_path / name).mkdir()
    shutil.copytree(tiny_llama_dir, tmp_path / "models" / "tiny")
    (tmp_path / "data" / "calib.txt").write_text("\n\n".join(f"the quick brown fox number {i}" for i in range(20)))
    for var in ("CURVEDIT_REDIS_URL", "CURVEDIT_API_KEYS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CURVEDIT_MODEL_ROOT", str(tmp_path / "models"))
    monkeypatch.setenv("CURVEDIT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("CURVEDIT_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.setenv("CURVEDIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CURVEDIT_DEVICE", "cpu")
    return tmp_path


def test_edit_in_process_prints_table_and_writes_artifacts(roots: Path) -> None:
    spec = {
        "model": {"path": "tiny"},
        "calibration": {"path": "calib.txt", "max_tokens": 256, "seq_len": 16, "batch_size": 4},
        "edit": {"layers": [-1], "keep_mass": 0.8},
        "evaluation": {"perplexity": {"path": "calib.txt", "seq_len": 16, "max_tokens": 128}, "agreement": {"k": 5}},
        "output": {"path": "edited"},
    }
    path = roots / "spec.json"
    path.write_text(json.dumps(spec))
    result = runner.invoke(app, ["edit", "--spec", str(path), "--cache", str(roots / "fcache")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("collect_factors", "export", "perplexity", "agreement nDCG@5", "keep_mass = 0.8", "edit finished"):
        assert text in out
    assert str(roots / "out" / "edited") in out
    assert (roots / "out" / "edited" / "manifest.json").is_file()
    assert any((roots / "fcache").rglob("*")), "the filesystem factor cache was used"

    # a second run with another keep_mass is served from the factor cache
    again = runner.invoke(
        app,
        ["edit", "--spec", str(path), "--cache", str(roots / "fcache"), "--keep-mass", "0.5", "--output", "e2"],
        env={"COLUMNS": "200"},
    )
    assert again.exit_code == 0, again.output
    assert "collect_factors (cache hit)" in again.output


def test_edit_pipeline_input_error_exits_2(roots: Path) -> None:
    result = runner.invoke(
        app,
        ["edit", "--model", "tiny", "--calibration", "calib.txt", "--layers", "40", "--cache", "off"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "invalid_target" in result.output and "Traceback" not in result.output


def test_edit_with_ekfac_on_a_weighted_union(roots: Path) -> None:
    (roots / "data" / "other.txt").write_text("\n\n".join(f"a ledger line {i} for account {3 * i}" for i in range(20)))
    spec = {
        "model": {"path": "tiny"},
        "calibration": {
            "sources": [{"path": "calib.txt", "weight": 0.7}, {"path": "other.txt", "weight": 0.3}],
            "max_tokens": 256,
            "seq_len": 16,
            "batch_size": 4,
        },
        "edit": {"layers": [-1], "projections": ["down"], "keep_mass": 0.8},
        "output": {"path": "union"},
    }
    path = roots / "union.json"
    path.write_text(json.dumps(spec))
    args = ["edit", "--spec", str(path), "--estimator", "ekfac", "--cache", str(roots / "fcache"), "--json"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    manifest = json.loads((roots / "out" / "union" / "manifest.json").read_text())
    assert manifest["spec"]["curvature"]["estimator"] == "ekfac"
    assert [s["weight"] for s in manifest["spec"]["calibration"]["sources"]] == [0.7, 0.3]
    assert manifest["cache"]["ekfac"] == {"hits": 0, "misses": 2}
    assert sum(k.startswith("S:") for k in manifest["cache_keys"]) == 2

    bad = runner.invoke(app, ["edit", "--spec", str(path), "--estimator", "fisherish"], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "curvature.estimator" in bad.output
