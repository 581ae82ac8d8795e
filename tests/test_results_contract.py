"""The typed result contract (``contract/results.py``): the pipeline's result is a ``JobResult``
without loss, the API returns the stored record through the same models, and the CLI renders
from them (its former copies of the stage and metric names are gone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

import contract.results
import contract.stages
import service.cli.render as render
from contract.results import JobRecord, JobResult
from contract.settings import Settings
from contract.spec import EditJobSpec
from contract.store.jobs import JobStore
from service.main import create_app
from tests.gateway_helpers import auth, make_settings
from tests.tiny_models import save_tiny
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline

TEXTS = [f"note {i}: alice sends bob a letter about the weather in paris, day {i}" for i in range(40)]


@pytest.fixture(scope="module")
def sweep_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("results")
    save_tiny(root / "models" / "tiny", "llama")
    (root / "data").mkdir()
    settings = Settings(
        model_root=root / "models",
        data_root=root / "data",
        output_root=root / "out",
        dataset_dir=root / "datasets",
        state_dir=root / "state",
        device="cpu",
    )
    spec = EditJobSpec.model_validate(
        {
            "model": {"path": "tiny"},
            "calibration": {"texts": TEXTS, "max_tokens": 400, "seq_len": 16, "batch_size": 8},
            "edit": {"layers": [3], "keep_mass": [0.5, 0.9]},
            "evaluation": {"perplexity": {"texts": TEXTS[:8], "seq_len": 16, "max_tokens": 128}},
            "output": {"path": "edited"},
        }
    )
    return run_pipeline(spec, settings=settings, job_id="typed", reporter=NullReporter(), cache=None)


def test_pipeline_result_is_a_job_result_without_loss(sweep_result: dict[str, Any]) -> None:
    typed = JobResult.model_validate(sweep_result)
    assert typed.to_json() == sweep_result  # nothing dropped, renamed or coerced on the way through
    assert [p.keep_mass for p in typed.results] == [0.5, 0.9]
    assert typed.output is not None and typed.output.sweep and typed.output.relative_dir == "edited"
    point = typed.results[0]
    assert point.layers and all(layer.layer == 3 for layer in point.layers)
    assert point.metrics.perplexity is not None and point.metrics.perplexity.perplexity is not None
    row = next(r for r in point.comparison if r.metric == "perplexity.perplexity")
    assert row.before == typed.baseline.perplexity.perplexity  # type: ignore[union-attr]
    assert row.after == point.metrics.perplexity.perplexity
    assert set(typed.timings) >= set(contract.stages.STAGES)


def test_stored_record_round_trips_through_the_api(
    sweep_result: dict[str, Any], tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(tmp_path, redis_url)
    store = JobStore(redis_client)
    job_id = store.create("alice", {"model": {"path": "tiny"}})["id"]
    assert store.mark_running(job_id, "w1")
    assert store.succeed(job_id, sweep_result)
    with TestClient(create_app(settings)) as client:
        body = client.get(f"/v1/edit-jobs/{job_id}", headers=auth()).json()
    record = JobRecord.model_validate(body)
    assert record.status == "succeeded" and record.result is not None
    assert record.result.to_json() == sweep_result


def test_cli_renders_from_the_contract(sweep_result: dict[str, Any]) -> None:
    assert render.STAGES is contract.stages.STAGES
    assert render.METRIC_LABELS is contract.results.METRIC_LABELS
    rows = render.sweep_results({"result": sweep_result})
    assert [r["keep_mass"] for r in rows] == [0.5, 0.9]
    first = sweep_result["results"][0]["comparison"]
    ppl = next(r for r in first if r["metric"] == "perplexity.perplexity")
    assert rows[0]["before"]["perplexity.perplexity"] == ppl["before"]
    assert rows[0]["after"]["perplexity.perplexity"] == ppl["after"]
    assert render.job_artifacts({"result": sweep_result}) == sweep_result["output"]["dir"]
    assert render.sweep_results({"result": {"results": "not a list"}}) == []  # not a JobResult: nothing


def test_store_refuses_a_result_that_is_not_a_job_result(redis_client: redis.Redis) -> None:
    from pydantic import ValidationError

    store = JobStore(redis_client)
    job_id = store.create("alice", {"model": {"path": "tiny"}})["id"]
    assert store.mark_running(job_id, "w1")
    with pytest.raises(ValidationError, match="keep_mass"):
        store.succeed(job_id, {"results": [{"keep_mass": "most of it"}]})
    assert store.status(job_id) == "running"  # nothing half-written
    assert store.succeed(job_id, JobResult(timings={"total": 1.5}))
    assert store.get(job_id)["result"] == {"timings": {"total": 1.5}}  # type: ignore[index]
