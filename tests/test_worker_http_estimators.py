"""EK-FAC and the factor union over HTTP through a real worker: an ``estimator: "ekfac"`` job on a
two-source calibration (an uploaded dataset and a file under the data root) succeeds, its
corrections show up in the factor cache listing, a second job with other weights collects no
factors (stage flags and events), and bad weights answer 422 naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract.settings import Settings
from service.main import create_app
from tests.tiny_models import save_tiny
from tests.worker_process import wait_http_job, worker_process

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer key-a"}


def _wait(http: TestClient, job_id: str, log: Path) -> dict[str, Any]:
    job = wait_http_job(http, job_id, AUTH, log)
    assert job["status"] == "succeeded", (job.get("error"), log.read_text()[-3000:])
    return job


def test_ekfac_on_a_weighted_union_over_http(tmp_path: Path, redis_url: str) -> None:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "domain.txt").write_text(
        "\n\n".join(f"ticket {i}: the printer on floor {i % 5} jams when duplex is on" for i in range(120))
    )
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-est-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_chunk_bytes=2**16,
        worker_heartbeat_s=1,
        api_keys="alice:key-a",
    )
    corpus = "\n\n".join(f"paragraph {i}: the quick brown fox jumps over the lazy dog {i}" for i in range(120))
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings)) as http, worker_process(settings, log):
        up = http.post("/v1/datasets", headers=AUTH, files={"file": ("c.txt", corpus.encode())}, data={"kind": "text"})
        assert up.status_code == 201, up.text

        def spec(w_web: Any, w_domain: Any) -> dict[str, Any]:
            return {
                "model": {"path": "tiny"},
                "calibration": {
                    "sources": [
                        {"dataset_id": up.json()["id"], "weight": w_web},
                        {"path": "domain.txt", "weight": w_domain},
                    ],
                    "max_tokens": 600,
                    "seq_len": 32,
                },
                "curvature": {"estimator": "ekfac"},
                "edit": {"layers": [-1], "projections": ["down"], "keep_mass": 0.8},
            }

        # bad weights: 422 naming the field, nothing queued
        for weights, field in (
            ((0.7, -0.3), "calibration.sources[1].weight"),
            ((0.0, 0.0), "calibration.sources"),
            ((float("inf"), 1.0), "calibration.sources[0].weight"),
            ((0.7, float("nan")), "calibration.sources[1].weight"),
        ):
            body = json.dumps(spec(*weights), allow_nan=True)  # Infinity / NaN tokens, as Python clients send
            r = http.post("/v1/edit-jobs", headers={**AUTH, "Content-Type": "application/json"}, content=body)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        missing = spec(0.7, 0.3)
        missing["calibration"]["sources"][1]["path"] = "absent.txt"
        r = http.post("/v1/edit-jobs", headers=AUTH, json=missing)
        assert r.status_code == 422 and r.json()["error"]["field"] == "calibration.sources[1].path", r.text

        first = http.post("/v1/edit-jobs", headers=AUTH, json=spec(0.7, 0.3))
        assert first.status_code == 202, first.text
        job = _wait(http, first.json()["id"], log)
        assert job["result"]["cache"]["ekfac"] == {"hits": 0, "misses": 2}  # one correction per source
        kinds = sorted(e["kind"] for e in http.get("/v1/factors", headers=AUTH).json()["data"])
        assert kinds.count("S") == 2 and kinds.count("A") == 2 and kinds.count("G") == 2

        second = http.post("/v1/edit-jobs", headers=AUTH, json=spec(0.2, 0.8))
        job2 = _wait(http, second.json()["id"], log)
        assert job2["stages"]["collect_factors"]["cached"] is True
        assert job2["stages"]["eigendecompose"]["cached"] is False  # the union's eigenbases are new
        assert job2["result"]["cache"]["collect_factors"]["misses"] == 0
        events = http.get(f"/v1/edit-jobs/{second.json()['id']}/events", headers=AUTH).json()
        assert not [e for e in events if (e.get("data") or {}).get("kind") == "collect"]
