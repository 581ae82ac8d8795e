"""Through the HTTP API end to end: upload a dataset, submit a job that uses it, a real worker
subprocess runs it, the SSE stream follows it to `end`, the job reports succeeded with a result,
readiness sees the worker and /metrics counts the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.gateway_helpers import auth, make_settings
from tests.tiny_models import save_tiny
from tests.worker_process import wait_for, worker_process

pytestmark = pytest.mark.slow


def test_http_submit_stream_and_succeed(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(
        tmp_path, redis_url, queue_name=f"gw-e2e-{tmp_path.name}", max_upload_bytes=1 << 20, worker_heartbeat_s=1
    )
    save_tiny(settings.model_root / "tiny", "llama")
    log = tmp_path / "worker.log"
    corpus = "\n\n".join(f"document {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(200))
    with TestClient(create_app(settings)) as client, worker_process(settings, log):
        up = client.post("/v1/datasets?kind=text&name=corpus", content=corpus.encode(), headers=auth())
        assert up.status_code == 201, up.text
        body = {
            "model": {"path": "tiny"},
            "calibration": {"dataset_id": up.json()["id"], "max_tokens": 1500, "seq_len": 32, "batch_size": 8},
            "edit": {"layers": [1, 2], "projections": ["gate", "up"], "keep_mass": [0.9, 0.6]},
            "output": {"save_model": False},
        }
        r = client.post("/v1/edit-jobs", json=body, headers={**auth(), "Idempotency-Key": "e2e"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "worker to be ready", log)
        with client.stream("GET", f"/v1/edit-jobs/{job_id}/events/stream", headers=auth()) as resp:
            text = "".join(resp.iter_text())
        blocks = [b for b in text.split("\n\n") if b.startswith(("event:", "id:"))]
        last = blocks[-1]
        assert "event: end" in last, (text[-2000:], log.read_text()[-3000:])
        final = json.loads(last.split("data: ", 1)[1])
        assert final["status"] == "succeeded", (final.get("error"), log.read_text()[-3000:])
        job = client.get(f"/v1/edit-jobs/{job_id}", headers=auth()).json()
        assert job["status"] == "succeeded" and job["result"] and job["finished_at"]
        assert {"load_model", "collect_factors", "eigendecompose", "edit"} <= set(job["stages"])
        assert "event: job" in text and "stage collect_factors started" in text
        assert client.get(f"/v1/edit-jobs/{job_id}", headers=auth("bob")).status_code == 404
        assert client.get("/metrics").status_code == 401  # /metrics needs a key unless metrics_public
        metrics = client.get("/metrics", headers=auth()).text
        assert 'curvedit_jobs{status="succeeded"} 1.0' in metrics
        assert "curvedit_stage_duration_seconds_bucket" in metrics
