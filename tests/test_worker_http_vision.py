"""A ViT edit job over HTTP through a real worker: the gateway accepts the image job (with its
preflight estimate), the worker collects the factors over the calibration images, and the job
result carries the before/after classification metrics -- the same ones the in-process pipeline
measures on the same model, data and spec (``tests/test_vision_pipeline.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract.settings import Settings
from contract.spec import EditJobSpec
from service.main import create_app
from tests.vision_fixtures import VisionData
from tests.worker_process import wait_http_job, worker_process
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer key-a"}
SPEC: dict[str, Any] = {
    "model": {"path": "vit"},
    "calibration": {"images": {"path": "train.npz"}, "batch_size": 32},
    "curvature": {"samples": 2},
    "edit": {"layers": [0, 1], "projections": ["up", "down"], "keep_mass": 0.8},
    "evaluation": {"classification": {"memorized": {"path": "memorized.npz"}, "heldout": {"path": "heldout.npz"}}},
}


def _wait(http: TestClient, job_id: str, log: Path) -> dict[str, Any]:
    job = wait_http_job(http, job_id, AUTH, log)
    assert job["status"] == "succeeded", (job.get("error"), log.read_text()[-3000:])
    return job


def test_vit_job_over_http_matches_the_in_process_pipeline(
    tmp_path: Path, redis_url: str, vision_data: VisionData
) -> None:
    (tmp_path / "models").mkdir()
    shutil.copytree(vision_data.model_dir, tmp_path / "models" / "vit")
    shutil.copytree(vision_data.data_root, tmp_path / "data")
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-vit-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        state_dir=tmp_path / "state",
        worker_heartbeat_s=1,
        api_keys="alice:key-a",
        device="cpu",
    )
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings)) as http, worker_process(settings, log):
        sub = http.post("/v1/edit-jobs", headers=AUTH, json=SPEC)
        assert sub.status_code in (200, 201, 202), sub.text
        assert sub.json()["estimate"]["assumptions"]["tokens_per_image"] == 17
        job = _wait(http, sub.json()["id"], log)
    result = job["result"]
    assert result["tokens"] == len(vision_data.train_labels) * 17
    base = result["baseline"]["classification"]
    after = result["results"][0]["metrics"]["classification"]
    assert base["memorized_accuracy"] == 1.0 and after["memorized_accuracy"] < 0.9

    # the same spec in process on a fresh output root gives the same metrics (same factors, bit for bit)
    local = settings.model_copy(update={"output_root": tmp_path / "out-local"})
    here = run_pipeline(
        EditJobSpec.model_validate(SPEC), settings=local, job_id="local", reporter=NullReporter(), cache=None
    )
    assert here["baseline"]["classification"] == base
    assert here["results"][0]["metrics"]["classification"] == after
