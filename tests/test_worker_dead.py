"""A worker killed with SIGKILL mid-job: the job is re-run or failed with ``worker_lost``, never
left ``running``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from contract.settings import Settings
from contract.store.jobs import JobStore
from tests.test_worker_e2e import spec
from tests.tiny_models import save_tiny
from tests.worker_process import submit, wait_for, wait_terminal, worker_process
from workers.lease import lease_holder

pytestmark = pytest.mark.slow


def _settings(tmp_path: Path, redis_url: str, max_attempts: int) -> Settings:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    return Settings(
        redis_url=redis_url,
        queue_name=f"test-dead-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",  # never a parent of the output root (the worker refuses that)
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_cache="off",
        worker_heartbeat_s=1,
        job_max_attempts=max_attempts,
    )


def _wait_collecting(store: JobStore, job: str, log: Path) -> None:
    wait_for(lambda: store.get(job)["stage"] == "collect_factors", 600, "the job to reach collect_factors", log)


def _wait_running(store: JobStore, client: redis.Redis, job: str, log: Path) -> dict:
    """Until the job runs in a work horse (before its pipeline can finish: torch is still importing)."""
    return wait_for(
        lambda: store.get(job)["status"] == "running" and lease_holder(client, job), 600, "the job to run", log
    )


def test_killed_work_horse_job_is_rerun(tmp_path: Path, redis_url: str) -> None:
    settings = _settings(tmp_path, redis_url, max_attempts=2)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    log = tmp_path / "worker.log"
    with worker_process(settings, log):
        job = submit(client, settings, spec(0.6, "rerun", max_tokens=2500))
        horse = _wait_running(store, client, job, log)
        assert horse["pid"]
        os.kill(int(horse["pid"]), signal.SIGKILL)
        rec = wait_terminal(store, job, 600, log)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["attempts"] == 2
    messages = [ev["message"] for ev in store.events(job)]
    assert any(m.startswith("requeued: the work horse died") for m in messages)
    assert (settings.output_root / "tester" / "rerun" / "model.safetensors").is_file()


def test_killed_worker_and_horse_job_fails_worker_lost(tmp_path: Path, redis_url: str) -> None:
    settings = _settings(tmp_path, redis_url, max_attempts=1)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    log = tmp_path / "worker.log"
    with worker_process(settings, log) as proc:
        job = submit(client, settings, spec(0.6, "lost", max_tokens=400_000))
        _wait_collecting(store, job, log)
        horse = lease_holder(client, job)
        os.kill(proc.pid, signal.SIGKILL)  # the whole worker dies: parent first, then its horse
        os.kill(int(horse["pid"]), signal.SIGKILL)
        proc.wait()
    assert store.get(job)["status"] == "running"  # nobody left to notice ...
    with worker_process(settings, log):  # ... until a worker starts and reaps it
        rec = wait_terminal(store, job, 120, log)
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "worker_lost"
    assert "no heartbeat" in rec["error"]["message"]
    assert not (settings.output_root / "tester" / "lost").exists()


def test_horse_dying_before_the_job_started_is_redelivered(tmp_path: Path, redis_url: str) -> None:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from contract.store.queue import JOB_FUNCTION
    from workers.worker_main import build_worker

    settings = Settings(redis_url=redis_url, queue_name=f"test-redeliver-{tmp_path.name}", job_max_attempts=1)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    job_id = store.create("tester", {"model": {"path": "x"}, "calibration": {"texts": ["a"]}})["id"]
    rq_job = Job.create(JOB_FUNCTION, args=(job_id,), connection=client, serializer=JSONSerializer, id=job_id)
    worker = build_worker(settings)
    worker._on_horse_killed(rq_job, 123, signal.SIGKILL, None)  # as RQ calls it after waitpid
    assert store.get(job_id)["status"] == "queued"
    assert f"{job_id}-redeliver-1" in [j.decode() for j in client.lrange(f"rq:queue:{settings.queue_name}", 0, -1)]
    worker._on_horse_killed(rq_job, 124, signal.SIGKILL, None)  # dies again: attempts exhausted
    rec = store.get(job_id)
    assert rec["status"] == "failed" and rec["error"]["code"] == "worker_lost"
