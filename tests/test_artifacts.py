"""Atomic export (staging directory + rename) and the delta file's re-apply / revert."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from workers.artifacts import apply_delta, read_delta, staging_dir, write_delta
from workers.pipeline.errors import PipelineError


def test_staging_dir_publishes_atomically(tmp_path: Path) -> None:
    final = tmp_path / "out" / "job"
    with staging_dir(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists() and tmp.name.startswith("job.tmp-")
    assert (final / "a.txt").read_text() == "x"
    assert [p.name for p in final.parent.iterdir()] == ["job"]


def test_staging_dir_removes_everything_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "job"
    with pytest.raises(RuntimeError), staging_dir(final) as tmp:
        (tmp / "half.bin").write_bytes(b"12")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staging_dir_refuses_an_existing_output(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    with pytest.raises(PipelineError) as err, staging_dir(tmp_path / "job"):
        pass
    assert err.value.code == "output_exists"


def test_delta_reapplies_and_reverts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    edited_w = torch.randn(3, 4)
    path = tmp_path / "delta.safetensors"
    write_delta(path, {"0.weight": original["0.weight"]}, {"0.weight": edited_w})
    assert set(read_delta(path, "original")) == {"0.weight"}
    assert apply_delta(model, path) == ["0.weight"]
    assert torch.equal(model[0].weight, edited_w)
    assert torch.equal(model[1].weight, original["1.weight"]) and torch.equal(model[0].bias, original["0.bias"])
    apply_delta(model, path, "original")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.items())
    with pytest.raises(KeyError):
        apply_delta(nn.Linear(4, 3), path)


def test_staging_dir_removes_what_an_earlier_killed_attempt_left(tmp_path: Path) -> None:
    final = tmp_path / "job"
    stale = tmp_path / "job.tmp-job_1-0123456789ab"  # a kill -9'd attempt of job_1
    (stale / "rho-0.5").mkdir(parents=True)
    other = tmp_path / "job.tmp-job_2-0123456789ab"  # another job's staging: not ours to touch
    other.mkdir()
    with staging_dir(final, attempt_tag="job_1") as tmp:
        (tmp / "x").write_text("y")
    assert (final / "x").read_text() == "y"
    assert not stale.exists()
    assert other.exists()


def test_distinct_sweep_values_get_distinct_directories() -> None:
    from workers.pipeline.stages.export import point_dirname

    assert point_dirname(0.6) == "rho-0.6"
    assert point_dirname(0.9) != point_dirname(0.9000000001)
