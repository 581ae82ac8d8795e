"""The product path end to end: HTTP gateway (in-process ASGI app) -> Redis -> a real worker
subprocess. A dataset uploaded over HTTP is the calibration corpus; the job's status, events and
artifacts come back over HTTP; ``GET /v1/factors`` lists the cache entries the worker wrote and
``DELETE /v1/factors/{key}`` removes one (index field and chunks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from contract.settings import Settings
from service.main import create_app
from tests.tiny_models import save_tiny
from tests.worker_process import wait_http_job, worker_process

pytestmark = pytest.mark.slow


def test_http_submit_with_uploaded_dataset(tmp_path: Path, redis_url: str) -> None:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    (tmp_path / "data").mkdir()
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-http-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_chunk_bytes=2**16,
        worker_heartbeat_s=1,
        api_keys="alice:key-a",
    )
    corpus = "\n\n".join(f"paragraph {i}: the quick brown fox jumps over the lazy dog {i}" for i in range(200))
    auth = {"Authorization": "Bearer key-a"}
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings)) as http, worker_process(settings, log):
        up = http.post("/v1/datasets", headers=auth, files={"file": ("c.txt", corpus.encode())}, data={"kind": "text"})
        assert up.status_code == 201, up.text
        spec = {
            "model": {"path": "tiny"},
            "calibration": {"dataset_id": up.json()["id"], "max_tokens": 2000, "seq_len": 32},
            "edit": {"layers": [-1], "keep_mass": 0.8},
            "evaluation": {"recitation": {"pairs": [{"prefix": "paragraph 3: the", "suffix": " quick brown"}]}},
        }
        created = http.post("/v1/edit-jobs", headers=auth, json=spec)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        job = wait_http_job(http, job_id, auth, log)
        assert job["status"] == "succeeded", (job.get("error"), log.read_text()[-3000:])
        result = job["result"]["results"][0]
        assert "recitation" in result["metrics"]
        assert Path(result["artifacts"]["model"], "model.safetensors").is_file()
        events = http.get(f"/v1/edit-jobs/{job_id}/events", headers=auth).json()
        assert [e["data"]["stage"] for e in events if (e.get("data") or {}).get("kind") == "stage"] == [
            "load_model",
            "collect_factors",
            "eigendecompose",
            "edit",
            "evaluate",
            "export",
        ]
        factors = http.get("/v1/factors", headers=auth).json()
        kinds = sorted(e["kind"] for e in factors["data"])
        assert kinds == sorted(["A", "A_eig"] + ["G", "G_eig"] * 2)  # gate+up share one A
        victim = factors["data"][0]["key"]
        assert http.delete(f"/v1/factors/{victim}", headers=auth).status_code == 204
        client = redis.Redis.from_url(redis_url)
        assert client.hget("curvedit:factors:index", victim) is None
        assert not list(client.scan_iter(f"curvedit:factors:chunk:{victim}:*"))
