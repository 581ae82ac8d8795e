"""End to end against a real Redis and a real worker subprocess: submit -> succeeded, artifacts
that load and differ from the base only in the edited tensors, delta round trip, cache hits on a
second job, sweeps, and cancellation during collect_factors leaving nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import torch
from transformers import AutoModelForCausalLM

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.store.queue import cancel_job
from tests.tiny_models import save_tiny
from tests.worker_process import submit, wait_for, wait_terminal, worker_process
from workers.artifacts import apply_delta, read_delta

pytestmark = pytest.mark.slow

TEXTS = [f"document {i}: the quick brown fox jumps over the lazy dog and counts {i * 7} sheep" for i in range(300)]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> tuple[Settings, redis.Redis, Path]:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_cache="redis",
        factor_chunk_bytes=2**16,
        worker_heartbeat_s=1,
        job_max_attempts=2,
    )
    (tmp_path / "data").mkdir()
    client = redis.Redis.from_url(redis_url)
    yield settings, client, tmp_path
    client.close()


def spec(keep_mass: float | list[float], output: str, max_tokens: int = 3000) -> dict:
    return {
        "model": {"path": "tiny"},
        "calibration": {"texts": TEXTS, "max_tokens": max_tokens, "seq_len": 32, "batch_size": 8},
        "edit": {"layers": [1, 2], "projections": ["gate", "up"], "keep_mass": keep_mass},
        "evaluation": {"perplexity": {"texts": TEXTS[:8], "seq_len": 32, "max_tokens": 256}, "agreement": {"k": 5}},
        "output": {"path": output},
    }


def test_submit_succeeds_artifacts_delta_cache_and_sweep(stack) -> None:
    settings, client, tmp = stack
    store = JobStore(client)
    log = tmp / "worker.log"
    with worker_process(settings, log):
        first = submit(client, settings, spec(0.7, "first"))
        rec = wait_terminal(store, first, 600, log)
        assert rec["status"] == "succeeded", rec["error"]
        assert not any(s["cached"] for s in rec["stages"].values())
        second = submit(client, settings, spec(0.4, "second"))
        sweep = submit(client, settings, spec([0.9, 0.6, 0.3], "sweep"))
        rec2 = wait_terminal(store, second, 600, log)
        rec3 = wait_terminal(store, sweep, 600, log)

    # first job: artifact loads, differs from the base only in the edited tensors
    out = Path(rec["result"]["results"][0]["artifacts"]["dir"])
    assert out == settings.output_root / "tester" / "first"
    base = AutoModelForCausalLM.from_pretrained(tmp / "models" / "tiny")
    edited = AutoModelForCausalLM.from_pretrained(out)
    edited_names = {f"{t['name']}.weight" for t in rec["result"]["targets"]}
    assert edited_names == {f"model.layers.{i}.mlp.{p}_proj.weight" for i in (1, 2) for p in ("gate", "up")}
    b, e = base.state_dict(), edited.state_dict()
    assert b.keys() == e.keys()
    changed = {k for k in b if not torch.equal(b[k], e[k])}
    assert changed == edited_names
    # delta: only the edited tensors; re-applied to the base it reproduces the edited weights
    delta = out / "delta.safetensors"
    assert set(read_delta(delta, "edited")) == edited_names
    apply_delta(base, delta, "edited")
    assert all(torch.equal(base.state_dict()[k], e[k]) for k in b)
    apply_delta(base, delta, "original")
    assert all(torch.equal(base.state_dict()[k], b[k]) for k in b)
    manifest = (out / "manifest.json").read_text()
    for needle in ('"fingerprints"', '"kept_pairs"', '"transformers"', '"perplexity"', '"agreement"'):
        assert needle in manifest

    # second job, other keep_mass: collect_factors and eigendecompose served from the cache
    assert rec2["status"] == "succeeded", rec2["error"]
    assert rec2["stages"]["collect_factors"]["cached"] and rec2["stages"]["eigendecompose"]["cached"]
    assert rec2["result"]["cache"]["collect_factors"]["misses"] == 0
    assert rec2["result"]["cache"]["eigendecompose"]["misses"] == 0
    assert not rec2["stages"]["edit"]["cached"]
    assert any("served from cache" in ev["message"] for ev in store.events(second))

    # sweep: one result per keep_mass, each with metrics and its own loadable artifact
    assert rec3["status"] == "succeeded", rec3["error"]
    results = rec3["result"]["results"]
    assert [r["keep_mass"] for r in results] == [0.9, 0.6, 0.3]
    for r in results:
        assert {"perplexity", "agreement"} <= set(r["metrics"])
        assert Path(r["artifacts"]["dir"]).is_dir()
        assert Path(r["artifacts"]["delta"]).is_file()
    kept = [sum(layer["kept_pairs"] for layer in r["layers"]) for r in results]
    assert kept[0] > kept[1] > kept[2]
    assert (settings.output_root / "tester" / "sweep" / "manifest.json").is_file()


def test_cancel_during_collect_factors_leaves_nothing(stack) -> None:
    settings, client, tmp = stack
    store = JobStore(client)
    log = tmp / "worker.log"
    with worker_process(settings, log):
        job = submit(client, settings, spec(0.5, "cancelled", max_tokens=400_000))
        wait_for(
            lambda: (r := store.get(job))["stage"] == "collect_factors" and (r["progress"]["tokens_done"] or 0) > 0,
            600,
            "collect_factors to make progress",
            log,
        )
        assert cancel_job(store, client, settings, job) == "running"
        rec = wait_terminal(store, job, 120, log)
    assert rec["status"] == "cancelled"
    assert rec["stages"]["collect_factors"]["status"] == "cancelled"
    assert not (settings.output_root / "tester" / "cancelled").exists()
    leftovers = list((settings.output_root / "tester").glob("*")) if settings.output_root.exists() else []
    assert leftovers == []
    assert not client.keys("curvedit:worker:lease:*")
