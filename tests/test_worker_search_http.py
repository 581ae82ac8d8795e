"""Goal-directed jobs over HTTP through a real worker subprocess: the gateway (in-process ASGI app)
-> Redis -> worker, then status, per-trial events and the result back over HTTP.

The tiny model is untrained, so its forget set is what it does recite: its own greedy
continuations of a few prompts (strict recitation 100 % before any edit, checked here).

- A reachable objective succeeds: ``result.search`` with trials, a chosen confirmed trial meeting
  the targets, one ``trial i/N`` event per trial, and the chosen edit exported with the search in
  its manifest.
- An unreachable one (rho kept so close to 1 that nothing changes, strict rate 0 demanded) fails with
  ``objective_not_met``, keeps the trials in ``result.search`` and writes no output directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from contract.settings import Settings
from service.main import create_app
from tests.tiny_models import save_tiny
from tests.worker_process import wait_http_job, worker_process
from workers.evaluation import evaluate_recitation
from workers.evaluation.recitation import greedy_generate

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer key-a"}
TEXTS = [f"paragraph {i}: the quick brown fox jumps over the lazy dog and counts {i * 7} sheep" for i in range(200)]


def own_recitations(model_dir: Path) -> list[dict[str, list[int]]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tok(t, add_special_tokens=False).input_ids[:8] for t in TEXTS[:12]]
    suffixes = greedy_generate(model, prompts, 6, pad_id=0)
    pairs = [{"prefix": p, "suffix": s} for p, s in zip(prompts, suffixes, strict=True)]
    check = evaluate_recitation(
        model, tok, [(p["prefix"], p["suffix"]) for p in pairs], prefix_tokens=8, suffix_tokens=6
    )
    assert check.strict_rate == 1.0
    return pairs


def spec(pairs: list[dict[str, list[int]]], output: str, **search: Any) -> dict[str, Any]:
    return {
        "model": {"path": "tiny", "dtype": "float32"},
        "calibration": {"texts": TEXTS, "max_tokens": 2000, "seq_len": 32},
        "objective": {
            "forget": {"pairs": pairs, "max_strict_rate": 0.5, "prefix_tokens": 8, "suffix_tokens": 6},
            "retain": {
                "perplexity": {"texts": TEXTS[100:140], "seq_len": 32, "max_tokens": 1200},
                "max_perplexity_increase": 100.0,
            },
            "search": {"layer_sets": [[0], [2, 3]], "max_trials": 12, **search},
        },
        "output": {"path": output},
    }


def wait(http: TestClient, job_id: str, log: Path) -> dict[str, Any]:
    return wait_http_job(http, job_id, AUTH, log)


def test_goal_directed_jobs_over_http(tmp_path: Path, redis_url: str) -> None:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    (tmp_path / "data").mkdir()
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-search-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_chunk_bytes=2**16,
        worker_heartbeat_s=1,
        api_keys="alice:key-a",
    )
    pairs = own_recitations(tmp_path / "models" / "tiny")
    log = tmp_path / "worker.log"
    with TestClient(create_app(settings)) as http, worker_process(settings, log):
        ok = http.post("/v1/edit-jobs", headers=AUTH, json=spec(pairs, "reachable", keep_mass_range=[0.05, 0.9]))
        assert ok.status_code == 202, ok.text
        unreachable = spec(pairs, "unreachable", layer_sets=[[0]], max_trials=4, keep_mass_range=[0.99999, 0.999999])
        unreachable["objective"]["forget"]["max_strict_rate"] = 0.0
        never = http.post("/v1/edit-jobs", headers=AUTH, json=unreachable)
        assert never.status_code == 202, never.text
        job = wait(http, ok.json()["id"], log)
        failed = wait(http, never.json()["id"], log)
        events = http.get(f"/v1/edit-jobs/{job['id']}/events", headers=AUTH).json()

    assert job["status"] == "succeeded", (job.get("error"), log.read_text()[-3000:])
    search = job["result"]["search"]
    assert search["met"] is True and 0 < search["evaluations"] <= 12
    chosen = search["chosen"]
    assert chosen["feasible"] and chosen["stage"] == "confirm" and chosen["layers"] in ([0], [2, 3])
    assert chosen["metrics"]["strict_rate"] <= 0.5
    trial_msgs = [e["message"] for e in events if (e.get("data") or {}).get("kind") == "trial"]
    assert len(trial_msgs) == search["evaluations"]
    assert trial_msgs[0].startswith("trial 1/12: layers ") and "ρ=" in trial_msgs[0]
    out = Path(job["result"]["output"]["dir"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["chosen"] == chosen
    assert manifest["keep_mass"] == chosen["keep_mass"]
    assert {t["layer"] for t in manifest["targets"]} == set(chosen["layers"])

    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "objective_not_met"
    fsearch = failed["result"]["search"]
    assert fsearch["met"] is False and 0 < len(fsearch["trials"]) <= 4
    assert not (settings.output_root / "alice" / "unreachable").exists()
    assert not any(p.name == "unreachable" for p in settings.output_root.rglob("unreachable"))
