"""The RQ side of the gateway: enqueue an edit job, cancel one, and look at the queue and its
workers (readiness, metrics). No torch: the function is referenced by its dotted path.

Each RQ job has the same id as our job record, a JSON (not pickle) serializer, the timeout and
failure TTL from settings, and one argument: the job id. Everything else (the resolved spec,
progress) lives in the job record (``contract.store.jobs``). RQ's serializer expects a Redis
client *without* ``decode_responses``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from rq import Queue
from rq import worker_registration as registration
from rq.exceptions import NoSuchJobError
from rq.job import Callback, Dependency, Job
from rq.serializers import JSONSerializer

from contract.settings import Settings
from contract.store.jobs import CANCELLED, QUEUED, JobStore

JOB_FUNCTION = "workers.rq_job.run_edit_job"
# Called by RQ when it gives up on a job, including one abandoned by a worker that died before
# the job reached ``running`` (RQ's started-registry cleanup); it redelivers or fails the record.
FAILURE_CALLBACK = "workers.reaper.on_rq_failure"


def get_queue(redis_client: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=redis_client, serializer=JSONSerializer)


def enqueue_job(
    redis_client: redis.Redis,
    settings: Settings,
    job_id: str,
    *,
    rq_id: str | None = None,
    note: str | None = None,
    after: list[str] | None = None,
) -> Job:
    """Put ``workers.rq_job.run_edit_job(job_id)`` on the settings' queue. The RQ job id is the
    record id, or ``rq_id`` for a retry of the same record (``note`` says which one). ``after``:
    RQ job ids to wait for (the job is deferred until each has finished or failed)."""
    return get_queue(redis_client, settings).enqueue_call(
        JOB_FUNCTION,
        args=(job_id,),
        job_id=rq_id or job_id,
        timeout=settings.job_timeout_s,
        failure_ttl=settings.failure_ttl_s,
        result_ttl=settings.failure_ttl_s,
        description=f"curvedit edit job {job_id}" + (f" ({note})" if note else ""),
        on_failure=Callback(FAILURE_CALLBACK),
        depends_on=Dependency(jobs=after, allow_failure=True) if after else None,
    )


def cancel_job(store: JobStore, redis_client: redis.Redis, settings: Settings, job_id: str) -> str | None:
    """Request a cancel; returns the job's status afterwards (None: no such job).

    A job still ``queued`` is taken off the queue and marked ``cancelled`` at once (atomically:
    if a worker picked it up meanwhile, ``mark_running`` already moved it to ``running`` and the
    worker sees the flag between batches instead). A ``running`` job keeps running until its
    pipeline checks the flag."""
    status = store.request_cancel(job_id)
    if status == QUEUED and store.mark_cancelled(job_id, only_if=(QUEUED,)):
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).cancel()
        get_queue(redis_client, settings).remove(job_id)
        return CANCELLED
    return store.status(job_id)


def live_workers(redis_client: redis.Redis, settings: Settings) -> int:
    """Workers registered on the queue whose heartbeat key has not expired."""
    worker_keys = sorted(registration.get_keys(queue=get_queue(redis_client, settings)))
    if not worker_keys:
        return 0
    with redis_client.pipeline(transaction=False) as pipe:
        for key in worker_keys:
            pipe.exists(key)
        return sum(1 for alive in pipe.execute() if alive)


def queue_stats(redis_client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Depth of the queue and sizes of RQ's registries (for /metrics)."""
    q = get_queue(redis_client, settings)
    return {
        "queued": q.count,
        "started": q.started_job_registry.count,
        "failed": q.failed_job_registry.count,
    }
