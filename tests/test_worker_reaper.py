"""Lost-job recovery rules, driven directly against a real Redis (no worker process)."""

from __future__ import annotations

import redis

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.store.queue import cancel_job
from workers.lease import JobLease
from workers.reaper import reap_lost_jobs, retry_rq_id
from workers.rq_job import run_edit_job

SPEC = {"model": {"path": "x"}, "calibration": {"texts": ["a b c"]}}


def _running_job(client: redis.Redis, store: JobStore) -> str:
    job_id = store.create("tester", SPEC)["id"]
    assert store.mark_running(job_id, "dead-worker")
    return job_id


def _queued_ids(client: redis.Redis, settings: Settings) -> list[str]:
    return [j.decode() for j in client.lrange(f"rq:queue:{settings.queue_name}", 0, -1)]


def test_job_with_a_live_lease_is_left_alone(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, queue_name="reaper-live")
    store = JobStore(client)
    job_id = _running_job(client, store)
    with JobLease(client, job_id, "alive", ttl_s=30) as lease:
        assert lease.acquired
        assert reap_lost_jobs(client, settings) == {}
        assert store.status(job_id) == "running"
        with JobLease(client, job_id, "second", ttl_s=30) as other:
            assert not other.acquired  # a second delivery must not run it twice
    assert client.get(f"curvedit:worker:lease:{job_id}") is None


def test_lost_job_is_requeued_then_failed_when_attempts_run_out(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, queue_name="reaper-lost", job_max_attempts=2)
    store = JobStore(client)
    job_id = _running_job(client, store)  # attempt 1, its worker died (no lease)
    assert reap_lost_jobs(client, settings) == {job_id: "requeued"}
    assert store.status(job_id) == "queued"
    assert _queued_ids(client, settings) == [retry_rq_id(job_id, 2)]
    assert store.mark_running(job_id, "dead-again")  # attempt 2 dies as well
    assert reap_lost_jobs(client, settings) == {job_id: "failed"}
    rec = store.get(job_id)
    assert rec["status"] == "failed" and rec["error"]["code"] == "worker_lost"
    assert "2 attempt(s)" in rec["error"]["message"]


def test_requeued_job_cancelled_while_queued_is_not_run(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, queue_name="reaper-cancel", job_max_attempts=2)
    store = JobStore(client)
    job_id = _running_job(client, store)
    reap_lost_jobs(client, settings)
    assert cancel_job(store, client, settings, job_id) == "cancelled"
    out = run_edit_job(job_id, settings)  # the retry's delivery: a terminal record is left alone
    assert out["skipped"] and store.status(job_id) == "cancelled"


def test_an_attempt_that_lost_its_lease_stops_without_writing(redis_url: str) -> None:
    import pytest

    from tests.worker_process import wait_for
    from workers.lease import LeaseGuard, LeaseLost
    from workers.pipeline.reporting import NullReporter

    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    job_id = _running_job(client, store)
    inner = NullReporter()
    with JobLease(client, job_id, "stalled", ttl_s=3) as lease:
        guard = LeaseGuard(inner, lease)
        assert guard.cancelled() is False
        client.delete(f"curvedit:worker:lease:{job_id}")  # expired while the process stalled ...
        client.set(f"curvedit:worker:lease:{job_id}", "retry")  # ... and a retry took it over
        wait_for(lambda: lease.lost, 10, "the lease loss to be noticed")
        with pytest.raises(LeaseLost):
            guard.cancelled()
        with pytest.raises(LeaseLost):
            guard.stage("edit")
    assert inner.stages == []
    assert client.get(f"curvedit:worker:lease:{job_id}") == b"retry"  # release left the new owner alone
