"""Dead-worker handling: a job abandoned by a dead process is retried or failed, never left running.

A record in ``running`` whose lease (``workers.lease``) has expired belongs to a process that
died (``kill -9``, OOM killer, lost machine). ``recover_job`` moves it back to ``queued`` and
enqueues a fresh RQ job (RQ id ``<job id>-attempt-<n>``, so the dead execution's RQ bookkeeping
cannot touch the retry) while ``attempts < settings.job_max_attempts``; after that the job
fails with ``error.code = "worker_lost"`` and the staging directory a death mid-export left is
removed. The worker runs ``reap_lost_jobs`` at start-up and
periodically, and ``recover_job`` at once when its work horse dies (``redeliver_unstarted`` when
the horse died before the job reached ``running``). No torch here.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job

from contract import keys
from contract.outputs import owner_output_root
from contract.paths import resolve_under
from contract.settings import Settings, get_settings
from contract.store.jobs import QUEUED, RUNNING, JobStore
from contract.store.queue import JOB_FUNCTION, enqueue_job, get_queue
from workers.lease import lease_holder, lease_key
from workers.staging import remove_staging

log = logging.getLogger(__name__)


def retry_rq_id(job_id: str, attempt: int) -> str:
    return f"{job_id}-attempt-{attempt}"


def record_id_of(rq_job: Job) -> str | None:
    """The job-record id an edit-job RQ job runs (its single argument); None for other functions
    (factor shards, whose death the parent job handles by collecting the shard itself)."""
    try:
        if rq_job.func_name != JOB_FUNCTION:
            return None
        args = rq_job.args
    except Exception:  # noqa: BLE001 - undecodable job data
        return None
    return str(args[0]) if args else None


def recover_job(client: Any, settings: Settings, job_id: str, reason: str) -> str | None:
    """Retry or fail one abandoned ``running`` job; returns ``"requeued"``, ``"failed"`` or None
    (the job was not running: nothing to do)."""
    store = JobStore(client)
    rec = store.get(job_id)
    if rec is None or rec["status"] != RUNNING:
        return None
    client.delete(lease_key(job_id))
    attempts = int(rec["attempts"] or 0)
    if attempts < settings.job_max_attempts:
        if not store.requeue(job_id, reason):
            return None
        _enqueue_retry(client, settings, job_id, retry_rq_id(job_id, attempts + 1), f"retry {attempts + 1}")
        log.warning("job %s requeued (attempt %d of %d): %s", job_id, attempts + 1, settings.job_max_attempts, reason)
        return "requeued"
    message = f"{reason}; gave up after {attempts} attempt(s) (CURVEDIT_JOB_MAX_ATTEMPTS={settings.job_max_attempts})"
    if store.fail(job_id, "worker_lost", message):
        log.warning("job %s failed: %s", job_id, message)
        _remove_job_staging(settings, rec, job_id)
        return "failed"
    return None


def _remove_job_staging(settings: Settings, rec: dict[str, Any], job_id: str) -> None:
    """A job given up as ``worker_lost`` may have died mid-export: delete its staging directory
    (``<output>.tmp-<job id>-*``, possibly gigabytes) — nobody will ever finish or rename it."""
    try:
        rel = str((rec.get("spec") or {}).get("output", {}).get("path") or job_id)
        final = resolve_under(owner_output_root(settings.output_root, str(rec["owner"])), rel, "output.path")
        for path in remove_staging(final, job_id):
            log.warning("job %s: removed its staging directory %s", job_id, path)
    except Exception:  # noqa: BLE001 - cleanup must never stop the reaper
        log.exception("job %s: removing its staging directory failed", job_id)


def redeliver_unstarted(client: Any, settings: Settings, job_id: str, reason: str) -> str | None:
    """A work horse died before its job reached ``running`` (the record is still ``queued``):
    enqueue the job again, at most ``job_max_attempts`` times, then fail it with ``worker_lost``."""
    store = JobStore(client)
    rec = store.get(job_id)
    if rec is None or rec["status"] != QUEUED or rec["cancel_requested"]:
        return None
    counter = keys.worker_redeliveries(job_id)
    n = int(client.incr(counter))
    client.expire(counter, settings.failure_ttl_s)
    if n > settings.job_max_attempts:
        message = f"{reason}; the job never started after {n - 1} redeliveries"
        return "failed" if store.fail(job_id, "worker_lost", message) else None
    _enqueue_retry(client, settings, job_id, f"{job_id}-redeliver-{n}", f"redelivery {n}")
    store.append_event(job_id, "warning", f"redelivered: {reason}", {"kind": "status", "status": QUEUED})
    return "requeued"


def _enqueue_retry(client: Any, settings: Settings, job_id: str, rq_id: str, what: str) -> None:
    enqueue_job(client, settings, job_id, rq_id=rq_id, note=what)


def reap_lost_jobs(client: Any, settings: Settings) -> dict[str, str]:
    """Recover every ``running`` job whose lease has expired; returns ``{job id: outcome}``."""
    outcomes: dict[str, str] = {}
    for raw in client.zrange(keys.jobs_status(RUNNING), 0, -1):
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if lease_holder(client, job_id) is not None:
            continue
        outcome = recover_job(client, settings, job_id, "the worker running this job stopped (no heartbeat)")
        if outcome:
            outcomes[job_id] = outcome
    return outcomes


def _record_of_rq_id(rq_id: str) -> str:
    """``job_x``, ``job_x-attempt-2``, ``job_x-redeliver-1`` (and RQ's ``<id>:<execution>``) -> ``job_x``."""
    return rq_id.split(":")[0].split("-")[0]


def _other_rq_job_pending(client: Any, settings: Settings, record_id: str, except_rq_id: str) -> bool:
    """True when another RQ job for this record is still queued or being executed."""
    queue = get_queue(client, settings)
    ids = list(queue.get_job_ids()) + list(queue.started_job_registry.get_job_ids(cleanup=False))
    return any(_record_of_rq_id(i) == record_id and i.split(":")[0] != except_rq_id for i in ids)


def on_rq_failure(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ ``on_failure`` callback. Our job function records its own failures, so what reaches
    here with the record still ``queued`` or ``running`` is a job RQ abandoned (its worker and
    horse died, perhaps before the job was marked running): redeliver it, or fail it with
    ``worker_lost`` after ``job_max_attempts``. Records already terminal are left alone."""
    record_id = record_id_of(job)
    if not record_id:
        return
    settings = get_settings()
    if job.origin and job.origin != settings.queue_name:  # retry on the queue the job came from
        settings = settings.model_copy(update={"queue_name": job.origin})
    rec = JobStore(connection).get(record_id)
    if rec is None or rec["status"] not in (QUEUED, RUNNING) or lease_holder(connection, record_id) is not None:
        return
    if _other_rq_job_pending(connection, settings, record_id, job.id):
        return  # a retry is already on its way (e.g. the worker's horse-death handler made one)
    reason = f"RQ gave up on execution {job.id} ({getattr(exc_type, '__name__', exc_type)})"
    outcome = (
        recover_job(connection, settings, record_id, reason)
        if rec["status"] == RUNNING
        else redeliver_unstarted(connection, settings, record_id, reason)
    )
    log.warning("job %s: %s -> %s", record_id, reason, outcome)
