"""A job RQ abandons before it reached ``running`` (its worker and horse both died right after
the dequeue) is not left ``queued`` forever: RQ's started-registry cleanup calls our
``on_failure`` callback, which redelivers it (bounded), without duplicating a pending retry."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from rq.executions import Execution
from rq.job import JobStatus

from contract.settings import Settings
from contract.store.jobs import QUEUED, JobStore
from contract.store.queue import FAILURE_CALLBACK, enqueue_job, get_queue


def _settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"abandon-{tmp_path.name}", job_max_attempts=2)


def _abandon(client: redis.Redis, settings: Settings, rq_id: str) -> None:
    """What a worker does when it takes a job (queue -> started registry, status STARTED) and then
    dies with it: the execution's registry entry is left to expire."""
    queue = get_queue(client, settings)
    job = queue.fetch_job(rq_id)
    assert job is not None
    queue.remove(rq_id)
    with client.pipeline() as pipe:
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        execution = Execution.create(job, ttl=1, pipeline=pipe, worker_name="dead-worker")
        queue.started_job_registry.add_execution(execution, pipeline=pipe, ttl=1)
        pipe.execute()


def test_abandoned_unstarted_job_is_redelivered_then_failed(tmp_path: Path, redis_client: redis.Redis, redis_url: str):
    settings = _settings(tmp_path, redis_url)
    store = JobStore(redis_client)
    rec = store.create("tester", {"spec": "x"})
    job = enqueue_job(redis_client, settings, rec["id"])
    assert job._failure_callback_name == FAILURE_CALLBACK
    queue = get_queue(redis_client, settings)

    _abandon(redis_client, settings, rec["id"])
    time.sleep(2.1)  # the dead worker's execution entry expires
    queue.started_job_registry.cleanup()  # what every live worker's maintenance pass runs

    assert store.status(rec["id"]) == QUEUED
    pending = queue.get_job_ids()
    assert pending == [f"{rec['id']}-redeliver-1"], pending
    assert any("redelivered" in e["message"] for e in store.events(rec["id"]))

    # the redelivered execution dies the same way, twice more: then the job fails with a reason
    for n in (1, 2):
        _abandon(redis_client, settings, f"{rec['id']}-redeliver-{n}")
        time.sleep(2.1)
        queue.started_job_registry.cleanup()
    final = store.get(rec["id"])
    assert final is not None and final["status"] == "failed"
    assert final["error"]["code"] == "worker_lost"
    assert queue.get_job_ids() == []


def test_callback_does_not_duplicate_a_pending_retry(tmp_path: Path, redis_client: redis.Redis, redis_url: str):
    from workers.reaper import on_rq_failure

    settings = _settings(tmp_path, redis_url)
    store = JobStore(redis_client)
    rec = store.create("tester", {"spec": "x"})
    first = enqueue_job(redis_client, settings, rec["id"])
    # another execution of the same record is already queued: the callback must not add a third
    get_queue(redis_client, settings).enqueue_call("workers.rq_job.run_edit_job", args=(rec["id"],),
                                                   job_id=f"{rec['id']}-attempt-2")
    get_queue(redis_client, settings).remove(rec["id"])
    on_rq_failure(first, redis_client, RuntimeError, RuntimeError("x"), None)
    assert get_queue(redis_client, settings).get_job_ids() == [f"{rec['id']}-attempt-2"]
    assert store.status(rec["id"]) == QUEUED
