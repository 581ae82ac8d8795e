"""Datasets, factors, health/readiness, metrics, Redis-down 503s, OpenAPI, and the gateway
never importing torch — against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from contract.keys import FACTORS_INDEX, factor_owners
from contract.store.jobs import JobStore
from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> Iterator[tuple[TestClient, object]]:
    settings = make_settings(tmp_path, redis_url)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def err(resp) -> dict:  # type: ignore[no-untyped-def]
    body = resp.json()
    assert set(body) == {"error"}, body
    return body["error"]


# ------------------------------------------------------------------------------------ datasets
def test_dataset_upload_multipart_and_raw(env) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    text = b"first doc line\nstill first\n\nsecond doc\n"
    r = client.post("/v1/datasets", files={"file": ("corpus.txt", text, "text/plain")}, headers=auth())
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["kind"] == "text" and ds["records"] == 2 and ds["bytes"] == len(text) and ds["name"] == "corpus.txt"
    import hashlib

    assert ds["sha256"] == hashlib.sha256(text).hexdigest()
    folder = settings.dataset_dir / ds["id"]
    assert (folder / "data").read_bytes() == text
    assert json.loads((folder / "meta.json").read_text())["format"] == "txt"
    assert not [p for p in settings.dataset_dir.iterdir() if p.name.startswith(".")]

    lines = b'{"prefix": "a", "suffix": "b"}\n{"prefix": "c", "suffix": "d", "text": "x"}\n'
    r = client.post(
        "/v1/datasets?name=pairs", content=lines, headers={**auth(), "Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 201, r.text
    pairs = r.json()
    assert pairs["kind"] == "jsonl" and pairs["fields"] == ["prefix", "suffix"] and pairs["records"] == 2
    assert r.headers["Location"] == f"/v1/datasets/{pairs['id']}"

    page = client.get("/v1/datasets", params={"limit": 1}, headers=auth()).json()
    assert [d["id"] for d in page["data"]] == [pairs["id"]] and page["next_cursor"]
    page2 = client.get("/v1/datasets", params={"cursor": page["next_cursor"]}, headers=auth()).json()
    assert [d["id"] for d in page2["data"]] == [ds["id"]] and page2["next_cursor"] is None

    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth("bob")).status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth("bob")).status_code == 404
    assert client.get("/v1/datasets", headers=auth("bob")).json()["data"] == []
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth()).status_code == 204
    assert not folder.exists()
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth()).status_code == 404

    # the uploaded dataset is usable as calibration data (ownership checked at submission)
    body = job_body()
    body["calibration"] = {"dataset_id": pairs["id"]}
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422 and err(r)["field"] == "model.path"  # no model in this env: it got past the dataset


def test_dataset_upload_rejections(env) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    big = b"x" * (settings.max_upload_bytes + 1)
    r = client.post("/v1/datasets", files={"file": ("big.txt", big, "text/plain")}, headers=auth())
    assert r.status_code == 413
    assert str(settings.max_upload_bytes) in err(r)["message"]
    r = client.post("/v1/datasets", content=big, headers={**auth(), "Content-Type": "text/plain"})
    assert r.status_code == 413 and str(settings.max_upload_bytes) in err(r)["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while streaming
        for _ in range(10):
            yield b"y" * 1000

    r = client.post("/v1/datasets", content=chunks(), headers={**auth(), "Content-Type": "text/plain"})
    assert r.status_code == 413, r.text
    bad = [
        (b'{"text": "ok"}\nnot json\n', "application/x-ndjson", "line 2"),
        (b'{"title": "no text"}\n', "application/x-ndjson", "line 1"),
        (b"\xff\xfe\xfa bad utf8", "text/plain", "UTF-8"),
        (b"\n\n  \n", "text/plain", "no documents"),
    ]
    for content, ctype, needle in bad:
        r = client.post("/v1/datasets", content=content, headers={**auth(), "Content-Type": ctype})
        assert r.status_code == 422, r.text
        assert needle in err(r)["message"] and err(r)["field"] == "file"
    r = client.post("/v1/datasets", json={"texts": ["a"]}, headers=auth())
    assert r.status_code == 415
    # regression: a raw body of any other type was stored as a text dataset (the docs promise 415)
    r = client.post("/v1/datasets", content=b"\x89PNG", headers={**auth(), "Content-Type": "image/png"})
    assert r.status_code == 415 and err(r)["code"] == "unsupported_media_type" and "image/png" in err(r)["message"]
    assert not list(settings.dataset_dir.iterdir())  # nothing half-written remains
    r = client.post("/v1/datasets", content=b"a doc\n", headers={**auth(), "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text


def test_streamed_oversized_bodies_get_the_standard_413(env) -> None:  # type: ignore[no-untyped-def]
    """Regression: a body without Content-Length that passed the limit while streaming got a bare
    413 (field null, no limit_bytes) instead of the body a declared-too-large request gets."""
    client, settings = env

    def one_big_chunk(n: int) -> Iterator[bytes]:
        yield b"z" * n

    r = client.post(
        "/v1/datasets",
        content=one_big_chunk(settings.max_upload_bytes + (128 << 10)),
        headers={**auth(), "Content-Type": "text/plain"},
    )
    assert r.status_code == 413, r.text
    e = err(r)
    assert e["code"] == "payload_too_large" and e["field"] == "file" and e["limit_bytes"] == settings.max_upload_bytes
    r = client.post(
        "/v1/edit-jobs",
        content=one_big_chunk(settings.max_body_bytes + 10),
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    e = err(r)
    assert e["code"] == "payload_too_large" and e["limit_bytes"] == settings.max_body_bytes, e


# ------------------------------------------------------------------------------------ factors
def test_factors_list_and_delete(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    for key, size, used in (("a" * 64, 10, 2.0), ("b" * 64, 32, 5.0)):
        rec = {
            "key": key,
            "bytes": size,
            "created_at": 1.0,
            "last_used": used,
            "model": "m",
            "module": "x",
            "n_chunks": 2,
        }
        redis_client.hset(FACTORS_INDEX, key, json.dumps(rec))
        redis_client.sadd(factor_owners(key), "alice")
        redis_client.set(f"curvedit:factors:chunk:{key}:0", b"\0" * 5)
        redis_client.set(f"curvedit:factors:chunk:{key}:1", b"\0" * 5)
    got = client.get("/v1/factors", headers=auth()).json()
    assert got["count"] == 2 and got["total_bytes"] == 42 and got["data"][0]["key"] == "b" * 64
    assert client.delete(f"/v1/factors/{'a' * 64}", headers=auth()).status_code == 204
    assert not redis_client.exists(f"curvedit:factors:chunk:{'a' * 64}:0", f"curvedit:factors:chunk:{'a' * 64}:1")
    assert redis_client.exists(f"curvedit:factors:chunk:{'b' * 64}:0")
    assert client.delete(f"/v1/factors/{'a' * 64}", headers=auth()).status_code == 404
    assert client.get("/v1/factors").status_code == 401
    metrics = client.get("/metrics", headers=auth()).text
    assert "curvedit_factor_cache_entries 1.0" in metrics and "curvedit_factor_cache_bytes 32.0" in metrics


# ------------------------------------------------------------------------------------ health
def test_health_readiness_and_metrics(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and "no live worker" in err(r)["message"]
    q = Queue(settings.queue_name, connection=redis_client, serializer=JSONSerializer)
    worker = Worker([q], connection=redis_client, serializer=JSONSerializer, name="test-worker")
    worker.register_birth()
    try:
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["workers"] == 1
    finally:
        worker.register_death()
    redis_client.delete(worker.key)
    assert client.get("/readyz").status_code == 503

    store = JobStore(redis_client)
    job = store.create("alice", {})
    store.mark_running(job["id"], "w")
    store.set_stage(job["id"], "collect_factors", cached=True)
    store.succeed(job["id"], {})
    store.create("alice", {})
    text = client.get("/metrics", headers=auth()).text
    assert 'curvedit_jobs{status="succeeded"} 1.0' in text and 'curvedit_jobs{status="queued"} 1.0' in text
    assert 'curvedit_stage_duration_seconds_count{cached="true",stage="collect_factors"} 1.0' in text
    assert 'curvedit_stage_cache_hits_total{stage="collect_factors"} 1.0' in text
    assert "curvedit_queue_depth" in text and "curvedit_workers_live 0.0" in text
    assert 'curvedit_up{component="redis"} 1.0' in text and 'route="/readyz",status="503"' in text


def test_openapi_docs(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/edit-jobs",
        "/v1/edit-jobs/{job_id}",
        "/v1/edit-jobs/{job_id}/cancel",
        "/v1/edit-jobs/{job_id}/events",
        "/v1/edit-jobs/{job_id}/events/stream",
        "/v1/datasets",
        "/v1/datasets/{dataset_id}",
        "/v1/factors",
        "/v1/factors/{key}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------------------------ Redis down
def test_redis_down_is_503(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        for method, path in (("GET", "/v1/edit-jobs"), ("GET", "/v1/edit-jobs/job_x"), ("GET", "/v1/factors")):
            r = client.request(method, path, headers=auth())
            assert r.status_code == 503, r.text
            e = err(r)
            assert e["code"] == "redis_unavailable" and "Redis" in e["message"]
            assert ".." not in e["message"], e  # regression: "Connection refused.. Retry later"
        r = client.post("/v1/datasets", content=b"text", headers={**auth(), "Content-Type": "text/plain"})
        assert r.status_code == 503
        r = client.post("/v1/edit-jobs", json=job_body(), headers={**auth(), "Idempotency-Key": "k1"})
        assert r.status_code == 503 and err(r)["code"] == "redis_unavailable"
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and "unreachable" in err(r)["message"]
        assert 'curvedit_up{component="redis"} 0.0' in client.get("/metrics", headers=auth()).text


# ------------------------------------------------------------------------------------ no torch
def test_gateway_does_not_import_torch(tmp_path: Path, redis_url: str, tiny_llama_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from fastapi.testclient import TestClient
        import service.main
        from tests.gateway_helpers import auth, job_body, make_settings
        models = Path({str(tiny_llama_dir.parent)!r})
        settings = make_settings(Path({str(tmp_path)!r}), {redis_url!r}, model_root=models)
        with TestClient(service.main.create_app(settings)) as client:
            r = client.post("/v1/edit-jobs", json=job_body({tiny_llama_dir.name!r}), headers=auth())
            assert r.status_code == 202, r.text
            r = client.post("/v1/edit-jobs", json=job_body({tiny_llama_dir.name!r}, layers=[9]), headers=auth())
            assert r.status_code == 422, r.text
            client.get("/metrics", headers=auth()); client.get("/readyz")
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "transformers")))
        assert not bad, bad
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
