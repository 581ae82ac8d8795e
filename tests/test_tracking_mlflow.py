"""MLflow tracking of jobs against a real SQLite tracking store in a temp dir (no server): each
job run through ``run_edit_job`` (the RQ job function, in this process) becomes a run with the
spec as params, before/after metrics for every sweep point, the report and plots as artifacts,
and — with ``output.register_as`` — a registered model version that ``from_pretrained`` loads.
An unreachable tracking server never fails the edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

mlflow = pytest.importorskip("mlflow")

import torch  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from contract.settings import Settings  # noqa: E402
from contract.store.jobs import JobStore  # noqa: E402
from tests.tiny_models import save_tiny  # noqa: E402
from workers.rq_job import run_edit_job  # noqa: E402
from workers.tracking.flatten import flatten_params  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = [f"record {i}: the quick brown fox jumps over the lazy dog near the river bank" for i in range(40)]
PAIRS = [{"prefix": f"record {i}: the quick brown", "suffix": "fox jumps over the lazy dog"} for i in range(4)]


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> Any:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    (tmp_path / "data").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=redis_url,
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        state_dir=tmp_path / "state",
        factor_cache="off",
        device="cpu",
        mlflow_tracking_uri=uri,
        mlflow_experiment="curvedit-test",
        mlflow_artifact_location=str(tmp_path / "mlflow-artifacts"),
    )
    client = redis.Redis.from_url(redis_url)
    yield settings, JobStore(client), tmp_path
    client.close()


def job_spec(keep_mass: float | list[float], **output: Any) -> dict[str, Any]:
    return {
        "model": {"path": "tiny"},
        "calibration": {"texts": TEXTS, "max_tokens": 256, "seq_len": 16, "batch_size": 4},
        "edit": {"layers": [1, 2], "projections": ["gate", "up"], "keep_mass": keep_mass},
        "evaluation": {
            "recitation": {"pairs": PAIRS, "prefix_tokens": 4, "suffix_tokens": 4},
            "perplexity": {"texts": TEXTS[:8], "seq_len": 16, "max_tokens": 256},
        },
        "output": {"save_delta": False, **output},
    }


def run_job(settings: Settings, store: JobStore, spec: dict[str, Any]) -> dict[str, Any]:
    from contract.spec import EditJobSpec

    rec = store.create("tester", EditJobSpec.model_validate(spec).model_dump(mode="json"))
    run_edit_job(rec["id"], settings)
    final = store.get(rec["id"])
    assert final is not None
    return final


def test_a_sweep_job_is_a_run_with_params_metrics_and_report(env) -> None:  # type: ignore[no-untyped-def]
    settings, store, _tmp = env
    rec = run_job(settings, store, job_spec([0.9, 0.5]))
    assert rec["status"] == "succeeded", rec["error"]
    info = rec["result"]["mlflow"]
    assert set(info) >= {"run_id", "experiment_id"} and "model_uri" not in info  # a sweep logs no model
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == rec["id"]
    assert run.data.tags["curvedit.job_id"] == rec["id"] and run.data.tags["curvedit.owner"] == "tester"
    assert client.get_experiment(info["experiment_id"]).name == "curvedit-test"
    # params: the resolved spec, flattened
    assert run.data.params == flatten_params(rec["spec"])
    assert run.data.params["edit.keep_mass"] == "[0.9,0.5]" and run.data.params["calibration.seq_len"] == "16"
    # metrics: before and after for every sweep point, step = point index
    baseline, points = rec["result"]["baseline"], rec["result"]["results"]
    for name, key in (("recitation", "strict_rate"), ("perplexity", "perplexity")):
        after = client.get_metric_history(info["run_id"], f"after/{name}.{key}")
        before = client.get_metric_history(info["run_id"], f"before/{name}.{key}")
        assert sorted((m.step, m.value) for m in after) == [
            (i, pytest.approx(p["metrics"][name][key])) for i, p in enumerate(points)
        ]
        assert sorted((m.step, m.value) for m in before) == [(i, pytest.approx(baseline[name][key])) for i in (0, 1)]
    keep = client.get_metric_history(info["run_id"], "keep_mass")
    assert sorted((m.step, m.value) for m in keep) == [(0, 0.9), (1, 0.5)]
    # artifacts: the report, its plots and every manifest
    top = {a.path for a in client.list_artifacts(info["run_id"], "curvedit")}
    assert {"curvedit/report.md", "curvedit/manifest.json", "curvedit/eigenspectra.png"} <= top
    out_dir = Path(rec["result"]["output"]["dir"])
    assert {p.name for p in out_dir.glob("*.png")} == {Path(p).name for p in top if p.endswith(".png")}
    sub = {Path(p["artifacts"]["dir"]).name for p in points}
    assert {a.path.split("/")[1] for a in client.list_artifacts(info["run_id"], "curvedit") if a.is_dir} == sub
    events = [e for e in store.events(rec["id"]) if (e["data"] or {}).get("kind") == "mlflow"]
    assert len(events) == 1 and events[0]["data"]["run_id"] == info["run_id"]


def test_register_as_makes_a_model_version_that_from_pretrained_loads(env) -> None:  # type: ignore[no-untyped-def]
    settings, store, tmp = env
    rec = run_job(settings, store, job_spec(0.5, register_as="tiny-forget"))
    assert rec["status"] == "succeeded", rec["error"]
    info = rec["result"]["mlflow"]
    assert info["model_version"] == {"name": "tiny-forget", "version": "1"}
    client = MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version("tiny-forget", "1")
    assert version.run_id == info["run_id"] and version.tags["curvedit.job_id"] == rec["id"]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    local = mlflow.artifacts.download_artifacts("models:/tiny-forget/1", dst_path=str(tmp / "dl"))
    registered = AutoModelForCausalLM.from_pretrained(local)
    exported = AutoModelForCausalLM.from_pretrained(rec["result"]["results"][0]["artifacts"]["dir"])
    base = AutoModelForCausalLM.from_pretrained(tmp / "models" / "tiny")
    r, e, b = registered.state_dict(), exported.state_dict(), base.state_dict()
    assert r.keys() == e.keys() and all(torch.equal(r[k], e[k]) for k in r)  # the edited weights, exactly
    name = "model.layers.1.mlp.gate_proj.weight"
    assert not torch.equal(r[name], b[name])
    # a second job registers version 2 of the same model
    again = run_job(settings, store, job_spec(0.7, register_as="tiny-forget", path="second"))
    assert again["result"]["mlflow"]["model_version"]["version"] == "2"


def test_an_unreachable_tracking_server_never_fails_the_edit(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings, store, _tmp = env
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = settings.model_copy(
        update={"mlflow_tracking_uri": f"http://127.0.0.1:{port}", "mlflow_attempts": 2, "mlflow_backoff_s": 0.1}
    )
    rec = run_job(down, store, job_spec(0.5))
    assert rec["status"] == "succeeded", rec["error"]
    assert Path(rec["result"]["results"][0]["artifacts"]["dir"], "manifest.json").is_file()
    assert rec["result"]["mlflow"]["attempts"] == 2 and rec["result"]["mlflow"]["error"]
    warnings = [e for e in store.events(rec["id"]) if (e["data"] or {}).get("kind") == "mlflow"]
    assert [e["data"]["attempt"] for e in warnings] == [1, 2] and all(e["level"] == "warning" for e in warnings)
