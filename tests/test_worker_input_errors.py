"""Worker-side input errors end a job ``failed`` with code ``invalid_input`` and a message naming
the field and the line (or pair index); no error message or event carries a traceback or a server
path. Each job runs ``run_edit_job`` in this process against the test's own Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

import workers.pipeline.run as pipeline_run
from contract.settings import Settings
from contract.store.jobs import JobStore
from tests.tiny_models import save_tiny
from workers.rq_job import run_edit_job

TEXTS = [f"document {i}: the quick brown fox jumps over the lazy dog" for i in range(40)]


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> tuple[Settings, JobStore, Path]:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    (tmp_path / "data").mkdir()
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        state_dir=tmp_path / "state",
        factor_cache="off",
        device="cpu",
    )
    client = redis.Redis.from_url(redis_url)
    yield settings, JobStore(client), tmp_path
    client.close()


def job_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"path": "tiny"},
        "calibration": {"texts": TEXTS, "max_tokens": 256, "seq_len": 16, "batch_size": 4},
        "edit": {"layers": [1], "projections": ["gate"], "keep_mass": 0.5},
    }
    spec.update(over)
    return spec


def run(settings: Settings, store: JobStore, spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rec = store.create("tester", spec)
    run_edit_job(rec["id"], settings)
    final = store.get(rec["id"])
    assert final is not None
    return final, store.events(rec["id"])


def assert_no_leak(rec: dict[str, Any], events: list[dict[str, Any]], tmp: Path) -> None:
    text = json.dumps({"error": rec["error"], "events": events})
    assert "Traceback" not in text and 'File "' not in text, text
    assert str(tmp) not in text and str(tmp.resolve()) not in text, text
    assert "site-packages" not in text, text


def test_malformed_recitation_row_names_the_line(env) -> None:
    settings, store, tmp = env
    rows = [{"prefix": "a b", "suffix": "c d"}, {"prefix": [1, 2], "suffix": [3]}, {"prefix": 5, "suffix": None}]
    (tmp / "data" / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rec, events = run(settings, store, job_spec(evaluation={"recitation": {"path": "pairs.jsonl"}}))
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "invalid_input", rec["error"]
    assert rec["error"]["message"].startswith("evaluation.recitation line 3: prefix must be a string"), rec["error"]
    assert_no_leak(rec, events, tmp)


def test_null_suffix_and_negative_ids_are_named(env) -> None:
    settings, store, tmp = env
    (tmp / "data" / "p.jsonl").write_text('{"prefix": "x", "suffix": null}\n')
    rec, _ = run(settings, store, job_spec(evaluation={"recitation": {"path": "p.jsonl"}}))
    assert rec["error"]["code"] == "invalid_input"
    assert "evaluation.recitation line 1: suffix must be a string" in rec["error"]["message"]
    assert "got null" in rec["error"]["message"]


def test_token_id_outside_the_vocabulary(env) -> None:
    settings, store, tmp = env
    pairs = [{"prefix": [1, 2, 3], "suffix": [4, 5]}, {"prefix": [1, 10**6], "suffix": [2]}]
    rec, events = run(settings, store, job_spec(evaluation={"recitation": {"pairs": pairs}}))
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "invalid_input", rec["error"]
    msg = rec["error"]["message"]
    assert msg.startswith("evaluation.recitation.pairs[1]: prefix token id 1000000 is outside"), msg
    assert_no_leak(rec, events, tmp)
    # the check runs before any curvature work: the job never reached collect_factors
    assert "collect_factors" not in rec["stages"]


def test_token_ids_from_a_file_name_the_line(env) -> None:
    settings, store, tmp = env
    (tmp / "data" / "ids.jsonl").write_text('{"prefix": [1], "suffix": [2]}\n\n{"prefix": [1], "suffix": [99999999]}\n')
    rec, _ = run(settings, store, job_spec(evaluation={"recitation": {"path": "ids.jsonl"}}))
    assert rec["error"]["code"] == "invalid_input"
    assert rec["error"]["message"].startswith("evaluation.recitation line 3: suffix token id 99999999"), rec["error"]


@pytest.mark.parametrize(
    ("name", "body", "field", "line"),
    [
        ("calib.txt", b"first document\n\nsecond \xff\xfe document\n", "calibration", 3),
        ("calib.jsonl", b'{"text": "ok"}\n{"text": "bad \xc3\x28"}\n', "calibration", 2),
    ],
)
def test_undecodable_file_is_invalid_input(env, name: str, body: bytes, field: str, line: int) -> None:
    settings, store, tmp = env
    (tmp / "data" / name).write_bytes(body)
    spec = job_spec()
    spec["calibration"] = {"path": name, "max_tokens": 256, "seq_len": 16}
    rec, events = run(settings, store, spec)
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "invalid_input", rec["error"]
    assert rec["error"]["message"].startswith(f"{field} line {line}: not UTF-8 text"), rec["error"]
    assert_no_leak(rec, events, tmp)


def test_unexpected_error_keeps_the_traceback_in_the_log(env, monkeypatch, caplog) -> None:
    settings, store, tmp = env

    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError(f"secret detail at {tmp}/models/tiny/x.bin")

    monkeypatch.setattr(pipeline_run, "run_pipeline", boom)
    with caplog.at_level("ERROR", logger="workers.rq_job"):
        rec, events = run(settings, store, job_spec())
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "internal"
    assert "RuntimeError" in rec["error"]["message"]
    assert "secret detail" not in json.dumps({"error": rec["error"], "events": events})
    assert_no_leak(rec, events, tmp)
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_event_messages_lose_server_paths(env, monkeypatch) -> None:
    settings, store, tmp = env
    from workers.cache import guarded

    def failing_get(self, key):  # the backend fails the way a missing disk does: the error quotes a path
        self._failed("read", OSError(f"[Errno 2] No such file or directory: '{tmp}/state/factor-cache/x.json'"))

    monkeypatch.setattr(guarded.GuardedCache, "get", failing_get)
    settings.factor_cache = str(tmp / "state" / "factor-cache")
    rec, events = run(settings, store, job_spec())
    assert rec["status"] == "succeeded", rec["error"]
    cache_events = [e["message"] for e in events if (e.get("data") or {}).get("kind") == "cache"]
    assert any("<state_dir>/factor-cache/x.json" in m for m in cache_events), cache_events
    assert_no_leak(rec, events, tmp)


def test_pipeline_error_messages_lose_server_paths(env) -> None:
    settings, store, tmp = env
    (tmp / "models" / "empty").mkdir()
    rec, events = run(settings, store, job_spec(model={"path": "empty"}))
    assert rec["error"]["code"] == "model_not_found"
    assert "<model_root>/empty" in rec["error"]["message"], rec["error"]
    assert_no_leak(rec, events, tmp)
