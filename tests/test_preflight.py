"""Preflight at submission: the demo is accepted with an ``estimate`` in its record; an oversize job
gets a 422 naming the knob to change. The memory terms are checked against sizes computed here
from the architecture (the measured-peak check is bench/bench_preflight.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract.preflight import GIB, RUNTIME_BYTES, Capacity, JobShape, TargetShape, estimate, model_dims
from service.main import create_app
from tests.gateway_helpers import auth, make_settings
from tests.preflight_models import OLMO2_7B, llama_style_shapes, save_header_only

REPO = Path(__file__).resolve().parents[1]


def olmo_body(batch_size: int, dtype: str = "float32") -> dict[str, Any]:
    return {
        "model": {"path": "olmo7b", "dtype": dtype},
        "calibration": {"texts": ["some calibration text"], "max_tokens": 20_000_000, "seq_len": 512,
                        "batch_size": batch_size},
        "edit": {"layers": [29, 30, 31], "projections": ["gate", "up"], "keep_mass": 0.9},
    }  # fmt: skip


@pytest.fixture
def olmo_client(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, redis_url, worker_memory_gb=40.0, worker_tflops=400.0)
    save_header_only(settings.model_root / "olmo7b", OLMO2_7B)
    with TestClient(create_app(settings)) as client:
        yield client


def test_oversize_batch_is_refused_naming_the_batch_size(olmo_client: TestClient) -> None:
    r = olmo_client.post("/v1/edit-jobs", json=olmo_body(batch_size=64), headers=auth())
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_memory"
    assert err["field"] == "calibration.batch_size"
    assert "calibration.batch_size (now 64)" in err["message"] and "CURVEDIT_WORKER_MEMORY_GB=40" in err["message"]
    assert olmo_client.get("/v1/edit-jobs", headers=auth()).json()["data"] == []  # nothing was created


def test_weights_too_big_names_the_dtype_and_device_map(tmp_path: Path, redis_url: str) -> None:
    # float32 weights alone (27.2 GiB) do not fit in 27 GiB; with bfloat16 weights the job needs ~25.3 GiB
    settings = make_settings(tmp_path, redis_url, worker_memory_gb=27.0)
    save_header_only(settings.model_root / "olmo7b", OLMO2_7B)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/edit-jobs", json=olmo_body(batch_size=1), headers=auth())
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == "model.dtype"
        assert "model.dtype 'bfloat16'" in err["message"] and "CURVEDIT_DEVICE_MAP" in err["message"]
        ok = client.post("/v1/edit-jobs", json=olmo_body(batch_size=1, dtype="bfloat16"), headers=auth())
        assert ok.status_code == 202, ok.text


def test_a_job_that_fits_records_its_estimate(olmo_client: TestClient) -> None:
    r = olmo_client.post("/v1/edit-jobs", json=olmo_body(batch_size=8, dtype="bfloat16"), headers=auth())
    assert r.status_code == 202, r.text
    est = olmo_client.get(f"/v1/edit-jobs/{r.json()['id']}", headers=auth()).json()["estimate"]
    assert est["fits"] is True and est["memory_limit_gb"] == 40.0
    assert est["peak_gb"] < 40 and est["peak_bytes"] == sum(
        est["memory"][k] for k in ("weights", "accumulators", "runtime")
    ) + max(est["phase_bytes"].values())
    # bfloat16 weights of OLMo-2-7B-shaped tensors: 2 V H + L (4 H^2 + 3 H I + 2 H) + H elements
    h, i, v, layers = 4096, 11008, 100352, 32
    assert est["memory"]["weights"] == 2 * (2 * v * h + layers * (4 * h * h + 3 * h * i + 2 * h) + h)
    # float32 A (4096^2) and G (11008^2) for gate and up of three layers, twice (segment and total),
    # and the copy of one unit (8 rows x 512 positions, batch 8: nothing buffered) of the widest factor
    assert est["memory"]["accumulators"] == 2 * 6 * 4 * (h * h + i * i) + 4 * 8 * 512 * i
    assert est["seconds"] > 0 and est["tflops"] == 400.0


def test_demo_is_accepted_with_an_estimate(tmp_path: Path, redis_url: str) -> None:
    examples = REPO / "examples"
    settings = make_settings(tmp_path, redis_url, model_root=examples, data_root=examples, worker_memory_gb=2.0)
    body = (examples / "demo-edit.json").read_text()
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/edit-jobs", content=body, headers={**auth(), "Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        est = r.json()["estimate"]
        assert est["fits"] is True and 0 < est["peak_gb"] < 2.0
        assert est["assumptions"]["load_dtype"] == "float32"


def test_memory_terms_scale_as_the_model_says() -> None:
    cfg = {**OLMO2_7B, "num_hidden_layers": 2}
    shapes = {k: tuple(s) for k, s in llama_style_shapes(cfg).items()}
    dims = model_dims(cfg, shapes)
    t = [TargetShape(1, 11008, 4096)]
    small = estimate(dims, t, JobShape("float32", 2, 512, 512, 1024, 1, "float32", 1), Capacity())
    big = estimate(dims, t, JobShape("float32", 8, 512, 512, 1024, 1, "float32", 1), Capacity())
    assert big.memory["activations"] == 4 * small.memory["activations"]  # linear in batch x seq
    assert big.memory["logits_chunk"] == small.memory["logits_chunk"]  # one chunk, whatever the batch
    assert small.memory["runtime"] == RUNTIME_BYTES
    unlimited = estimate(dims, t, JobShape("float32", 4, 512, 512, 1024, 1, "float32", 3), Capacity())
    assert unlimited.fits and unlimited.memory["rotations"] == 4 * 11008 * 4096  # a sweep keeps C
    search = estimate(dims, t, JobShape("float32", 4, 512, 512, 1024, 1, "float32", 48, search=True), Capacity())
    assert search.memory["rotations"] == 4 * 11008 * 4096  # C of every candidate: under the search budget
    assert search.flops["projection"] == 48 * unlimited.flops["projection"] / 3  # one edit per trial
    tight = estimate(dims, t, JobShape("float32", 4, 512, 512, 1024, 1, "float32", 1), Capacity(memory_gb=1.0))
    assert not tight.fits and tight.peak_bytes > GIB
