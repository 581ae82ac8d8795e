"""The RQ job function: ``run_edit_job(job_id)`` — a thin shell around ``run_pipeline``.

Its only argument is the job-record id (JSON-serialisable); the spec, progress and result live
in the record (``contract.store.jobs``). Runs inside a freshly spawned work horse, so this is
where torch is first imported. Outcomes map onto the record: success -> ``succeeded``;
``JobCancelled`` -> ``cancelled``; ``PipelineError`` -> ``failed`` with its code; a timeout ->
``failed``/``timeout``; anything else -> ``failed``/``internal`` with a message that names only the
exception type (the traceback goes to the worker log, never to the record or its events); server
paths in a ``PipelineError`` message or an event are replaced (``workers.redact``). A worker shutting down
pre-empts its job: it stops after the current batch and is requeued (``workers.preempt``).
Starting is idempotent: a terminal record, or one whose lease another live process holds, is
left alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

import redis
from pydantic import ValidationError

from contract import tracing
from contract.logs import configure_logging, log_context
from contract.outputs import owner_output_root
from contract.settings import Settings, get_settings
from contract.spec import EditJobSpec
from contract.store.jobs import TERMINAL_STATUSES, JobStore
from contract.store.queue import enqueue_job
from contract.store.reporter import RedisReporter
from workers.lease import JobLease, LeaseGuard, LeaseLost, lease_ttl_s
from workers.memory_peak import memory_event
from workers.preempt import JobPreempted, PreemptGuard, clear_preempt
from workers.redact import RedactingReporter, public_message
from workers.shards import AwaitShards

log = logging.getLogger(__name__)


def _worker_name() -> str:
    return os.environ.get("RQ_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


def run_edit_job(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Run one edit job to a terminal state; returns a small summary (RQ stores it)."""
    settings = settings or get_settings()
    if not settings.redis_url:
        raise RuntimeError("run_edit_job needs CURVEDIT_REDIS_URL")
    observability(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        first = JobStore(client).get(job_id) or {}
        # every log line of this job (and its pipeline) carries the job id and the submitting request's id
        with log_context(job_id=job_id, request_id=first.get("request_id")):
            log.info("job started (attempt %d)", int(first.get("attempts") or 0) + 1)
            summary = _run(client, settings, job_id)
            log.info("job ended: %s", summary.get("status"))
        final = JobStore(client).get(job_id)
        if final is not None and final["status"] in TERMINAL_STATUSES:
            tracing.record_job_spans(final, request_id=first.get("request_id"))
            tracing.flush()
        return summary
    finally:
        client.close()


def observability(settings: Settings) -> None:
    """JSON logs and tracing in the work horse (a fresh interpreter), as the settings ask."""
    if settings.log_format == "json":
        configure_logging(settings)
    tracing.setup_tracing(settings, "worker")


def _run(client: redis.Redis, settings: Settings, job_id: str) -> dict[str, Any]:
    store = JobStore(client)
    rec = store.get(job_id)
    if rec is None:
        log.warning("job %s has no record; nothing to do", job_id)
        return {"job_id": job_id, "status": None, "skipped": True}
    if rec["status"] in TERMINAL_STATUSES:
        return {"job_id": job_id, "status": rec["status"], "skipped": True}
    worker = _worker_name()
    with JobLease(client, job_id, worker, lease_ttl_s(settings.worker_heartbeat_s)) as lease:
        if not lease.acquired:
            log.warning("job %s is held by another live worker; not running it twice", job_id)
            return {"job_id": job_id, "status": store.status(job_id), "skipped": True}
        if rec["cancel_requested"]:
            store.mark_cancelled(job_id)
            return {"job_id": job_id, "status": store.status(job_id)}
        if not store.mark_running(job_id, worker):
            return {"job_id": job_id, "status": store.status(job_id), "skipped": True}
        clear_preempt(client, job_id)  # a flag left by an earlier shutdown is not for this run
        preempted = _execute(client, store, job_settings(settings, rec["owner"]), job_id, rec, lease)
    # after the lease is released, so the next worker may take the job at once
    if isinstance(preempted, AwaitShards):
        _await_shards(client, store, settings, job_id, preempted)
    elif preempted:
        _requeue_preempted(client, store, settings, job_id)
    return {"job_id": job_id, "status": store.status(job_id)}


def _requeue_preempted(client: redis.Redis, store: JobStore, settings: Settings, job_id: str) -> None:
    """The worker shut down mid-job: the job goes back to the queue, the attempt not counted."""
    clear_preempt(client, job_id)
    reason = "the worker shut down; the job stopped after its current batch and will run again"
    if store.requeue(job_id, reason, refund_attempt=True):
        enqueue_job(client, settings, job_id, rq_id=f"{job_id}-preempted-{secrets.token_hex(4)}", note="requeued")
        log.warning("job %s: %s", job_id, reason)


def _await_shards(client: redis.Redis, store: JobStore, settings: Settings, job_id: str, wait: AwaitShards) -> None:
    """Only shards running on other workers are left: the job gives its worker back and is enqueued
    again behind them (RQ dependency, failures allowed); that run finds every finished shard in the
    factor cache and collects any failed one itself. The wait does not count as an attempt."""
    reason = (
        f"{wait.done}/{wait.shards} factor shards collected; waiting for {len(wait.handles)} on other "
        "workers without holding a worker; the job continues (the reduce) when they finish"
    )
    if store.requeue(job_id, reason, refund_attempt=True):
        rq_id = f"{job_id}-reduce-{secrets.token_hex(4)}"
        enqueue_job(client, settings, job_id, rq_id=rq_id, note="reduce after shards", after=wait.handles)
        log.info("job %s: %s", job_id, reason)


def job_settings(settings: Settings, owner: str) -> Settings:
    """The settings a job of ``owner`` runs with: its outputs confined to the owner's directory."""
    return settings.model_copy(update={"output_root": owner_output_root(settings.output_root, owner)})


def _execute(
    client: redis.Redis, store: JobStore, settings: Settings, job_id: str, rec: dict[str, Any], lease: JobLease
) -> bool | AwaitShards:
    """Run the pipeline and record its outcome; True when the job was pre-empted (to requeue), the
    ``AwaitShards`` when it stopped to wait for factor shards on other workers."""
    # torch is imported here, in the work horse, never in the worker's parent process.
    from rq.timeouts import JobTimeoutException

    from workers.cache import open_factor_cache
    from workers.pipeline.errors import PipelineError
    from workers.pipeline.reporting import JobCancelled
    from workers.pipeline.run import run_pipeline
    from workers.shards import RQShardFanout
    from workers.tracking.mlflow_run import track_outcome

    try:
        spec = EditJobSpec.model_validate(rec["spec"])
    except ValidationError as exc:
        store.fail(job_id, "invalid_spec", f"stored spec does not validate: {exc}")
        return False
    guarded = PreemptGuard(LeaseGuard(RedisReporter(store, job_id), lease), client, job_id)
    reporter = RedactingReporter(guarded, settings)
    try:
        cache = open_factor_cache(settings, client, owner=rec["owner"])
        fanout = RQShardFanout(client, settings, job_id) if settings.collect_shards > 1 else None
        result = run_pipeline(spec, settings=settings, job_id=job_id, reporter=reporter, cache=cache, fanout=fanout)
    except LeaseLost:
        log.warning("job %s: lease lost (this process stalled); leaving the record to its retry", job_id)
        return False
    except JobPreempted:
        return not lease.lost
    except AwaitShards as wait:
        return wait if not lease.lost else False
    except JobCancelled as exc:
        store.append_event(job_id, "warning", f"stopped: {exc}", {"kind": "cancel"})
        store.mark_cancelled(job_id)
    except PipelineError as exc:
        log.info("job %s failed: %s: %s", job_id, exc.code, exc.message)
        error = {"code": exc.code, "message": public_message(exc.message, settings)}
        track_outcome(settings, store, job_id, rec, "failed", exc.result, error)
        store.fail(job_id, exc.code, error["message"], result=exc.result)
    except JobTimeoutException:
        store.fail(job_id, "timeout", f"the job ran longer than {settings.job_timeout_s} s")
    except Exception as exc:  # noqa: BLE001 - every failure must end the record; the traceback stays in the log
        log.exception("job %s failed with an unexpected error", job_id)
        message = f"unexpected {type(exc).__name__} in the worker (details are in the worker log, job {job_id})"
        store.append_event(job_id, "error", message, {"kind": "internal"})
        store.fail(job_id, "internal", message)
    else:
        if lease.lost:  # finished, but a retry may own the record now: do not overwrite it
            log.warning("job %s finished after losing its lease; result not recorded", job_id)
            return False
        message, data = memory_event(rec.get("estimate"))  # measured peak beside the preflight's
        store.append_event(job_id, "info", message, data)
        tracked = track_outcome(settings, store, job_id, rec, "succeeded", result)  # MLflow, when configured
        store.succeed(job_id, result if tracked is None else {**result, "mlflow": tracked})
    return False
