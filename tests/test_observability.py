"""Structured logs and traces: with ``CURVEDIT_LOG_FORMAT=json`` every gateway and worker log line
is one JSON object with the job id and the request id (the request that submitted the job, for
worker lines); with tracing on, each request is a span and each job a span with one child per
pipeline stage, timed from the job record."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

pytest.importorskip("opentelemetry.sdk")  # the `otel` extra

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from contract import tracing  # noqa: E402
from contract.logs import log_context  # noqa: E402
from contract.settings import Settings  # noqa: E402
from contract.store.jobs import JobStore  # noqa: E402
from service.main import create_app  # noqa: E402
from tests.gateway_helpers import auth, job_body, make_settings  # noqa: E402
from tests.tiny_models import save_tiny  # noqa: E402
from workers.rq_job import run_edit_job  # noqa: E402

TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(30)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("obs-model") / "llama", family="llama")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """stderr as seen by the handler ``configure_logging`` installs; root logging restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uv = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    stream = io.StringIO()
    # pytest re-points sys.stderr at the start of the test's call phase: patch it from there
    stream.begin = lambda: monkeypatch.setattr(sys, "stderr", stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in uv.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def lines(stream: io.StringIO, *, only_json: bool = False) -> list[dict[str, Any]]:
    """Every line parsed as JSON. ``only_json``: skip the progress bars transformers draws in this
    process (it was imported before ``configure_logging`` could turn them off, as a work horse does)."""
    text = [line for line in stream.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in text if not only_json or line.startswith("{")]


@pytest.fixture
def memory_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install_provider(provider)
    yield exporter
    tracing.install_provider(None)


def test_gateway_json_lines_carry_request_and_job_ids(  # type: ignore[no-untyped-def]
    tmp_path: Path, redis_url: str, llama_dir: Path, redis_client: redis.Redis, captured, memory_spans
) -> None:
    captured.begin()
    settings = make_settings(tmp_path, redis_url, log_format="json")
    shutil.copytree(llama_dir, settings.model_root / "llama")
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/v1/edit-jobs", json=job_body("llama"), headers=auth() | {"X-Request-ID": "req-submit-1"}
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        got = client.get(f"/v1/edit-jobs/{job_id}", headers=auth() | {"X-Request-ID": "req-read-2"})
        assert got.headers["x-request-id"] == "req-read-2"
        anonymous = client.get("/v1/edit-jobs", headers=auth())
    out = lines(captured)
    assert out and all({"time", "level", "logger", "message", "job_id", "request_id"} <= set(o) for o in out)
    access = [o for o in out if o["logger"] == "curvedit.access"]
    submit = next(o for o in access if o["request_id"] == "req-submit-1")
    assert submit["message"].startswith("POST /v1/edit-jobs 202") and submit["job_id"] is None
    read = next(o for o in access if o["request_id"] == "req-read-2")
    assert read["job_id"] == job_id and read["status"] == 200
    generated = anonymous.headers["x-request-id"]
    assert any(o["request_id"] == generated for o in access)  # an id the gateway made up is logged too
    # the submitting request's id is kept with the job, for the worker's lines
    assert JobStore(redis_client).get(job_id)["request_id"] == "req-submit-1"  # type: ignore[index]
    spans = {s.attributes.get("curvedit.request_id"): s for s in memory_spans.get_finished_spans()}
    assert spans["req-read-2"].attributes["curvedit.job_id"] == job_id
    assert spans["req-read-2"].attributes["http.response.status_code"] == 200
    assert spans["req-submit-1"].name == "POST /v1/edit-jobs"


def test_worker_json_lines_and_job_spans(  # type: ignore[no-untyped-def]
    tmp_path: Path, redis_url: str, llama_dir: Path, redis_client: redis.Redis, captured, memory_spans
) -> None:
    captured.begin()
    shutil.copytree(llama_dir, tmp_path / "models" / "tiny")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=redis_url,
        model_root=tmp_path / "models",
        data_root=tmp_path / "models",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        state_dir=tmp_path / "state",
        factor_cache="off",
        device="cpu",
        log_format="json",
    )
    store = JobStore(redis_client)
    spec = {
        "model": {"path": "tiny"},
        "calibration": {"texts": TEXTS, "max_tokens": 128, "seq_len": 16, "batch_size": 4},
        "edit": {"layers": [1], "projections": ["gate"], "keep_mass": 0.5},
    }
    from contract.spec import EditJobSpec

    with log_context(request_id="req-submit-9"):  # what the gateway's request context does
        rec = store.create("tester", EditJobSpec.model_validate(spec).model_dump(mode="json"))
    run_edit_job(rec["id"], settings)
    final = store.get(rec["id"])
    assert final is not None and final["status"] == "succeeded", final and final["error"]
    out = [o for o in lines(captured, only_json=True) if o["logger"].startswith("workers")]
    assert [o["message"] for o in out if o["logger"] == "workers.rq_job"][:1] == ["job started (attempt 1)"]
    assert out and all(o["job_id"] == rec["id"] and o["request_id"] == "req-submit-9" for o in out)
    spans = memory_spans.get_finished_spans()
    (job_span,) = [s for s in spans if s.name == "edit_job"]
    assert job_span.attributes["curvedit.job_id"] == rec["id"]
    assert job_span.attributes["curvedit.request_id"] == "req-submit-9"
    stage_spans = [s for s in spans if s.name.startswith("stage ")]
    assert {s.name.removeprefix("stage ") for s in stage_spans} == set(final["stages"])
    assert all(s.parent is not None and s.parent.span_id == job_span.context.span_id for s in stage_spans)
    assert all(job_span.start_time <= s.start_time <= s.end_time <= job_span.end_time for s in stage_spans)
