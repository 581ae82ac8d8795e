"""Every Redis key name curvedit uses, in one place.

Job records and their events never expire; idempotency keys do (``Settings.idempotency_ttl_s``),
and so do open-stream lease sets (two lease periods after their last use).
The factor cache (``workers/cache``) owns the ``curvedit:factors:*`` keys; the gateway only reads
its index and deletes entries through the same layout. Every key with a TTL says so in its
docstring ("TTL ..."); every other key lives until it is deleted. No module builds a
``curvedit:`` key itself: RQ's own ``rq:*`` keys are the only others in the database.
"""

from __future__ import annotations

PREFIX = "curvedit"


def job(job_id: str) -> str:
    """Hash: one job record (every field JSON-encoded)."""
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    """Stream: the job's ordered event log; entry id ``<seq>-0``."""
    return f"{PREFIX}:job:{job_id}:events"


def job_updates(job_id: str) -> str:
    """Pub/sub channel: a message (the new status) after every change to the job."""
    return f"{PREFIX}:job:{job_id}:updates"


def job_preempt(job_id: str) -> str:
    """String (TTL 1 h): set by a worker that is shutting down while it runs the job; the job's
    pipeline stops after its current batch and the job is requeued."""
    return f"{PREFIX}:job:{job_id}:preempt"


def jobs_all() -> str:
    """Sorted set (all scores 0, ordered by id = creation time): every job."""
    return f"{PREFIX}:jobs:all"


def jobs_status(status: str) -> str:
    """Sorted set: every job currently in ``status``."""
    return f"{PREFIX}:jobs:status:{status}"


def jobs_owner(owner: str, status: str | None = None) -> str:
    """Sorted set: one owner's jobs (optionally only those in ``status``)."""
    base = f"{PREFIX}:jobs:owner:{owner}"
    return base if status is None else f"{base}:status:{status}"


def stage_seconds() -> str:
    """Hash: stage-duration histogram buckets (``<stage>|<cached>|<le>``, ``...|sum``, ``...|count``)."""
    return f"{PREFIX}:metrics:stage_seconds"


def idempotency(owner: str, key_digest: str) -> str:
    """String (with TTL): JSON {body_sha256, job_id} for one owner's Idempotency-Key."""
    return f"{PREFIX}:idem:{owner}:{key_digest}"


def open_streams(owner: str) -> str:
    """Sorted set (with TTL, refreshed while streams run): one owner's open event-stream leases,
    member = lease token, score = lease expiry in ms (``service.stream_slots``)."""
    return f"{PREFIX}:streams:owner:{owner}"


def dataset(dataset_id: str) -> str:
    """String: JSON metadata of one uploaded dataset."""
    return f"{PREFIX}:dataset:{dataset_id}"


def datasets_owner(owner: str) -> str:
    """Sorted set (scores 0, ordered by id): one owner's datasets."""
    return f"{PREFIX}:datasets:owner:{owner}"


FACTORS_INDEX = f"{PREFIX}:factors:index"


def factor_chunks_pattern(key: str) -> str:
    return f"{PREFIX}:factors:chunk:{key}:*"


def factor_tmp_chunk(key: str, nonce: str, i: int) -> str:
    """String (TTL 1 h): chunk ``i`` of an entry being written, renamed into place when complete."""
    return f"{PREFIX}:factors:tmp:{key}:{nonce}:{i}"


# --- workers -------------------------------------------------------------------------------------
WORKER_LEASE_PREFIX = f"{PREFIX}:worker:lease:"


def worker_lease(job_id: str) -> str:
    """String (TTL 3 heartbeats, renewed by the holder): the worker that runs the job."""
    return f"{WORKER_LEASE_PREFIX}{job_id}"


def worker_redeliveries(job_id: str) -> str:
    """String counter (TTL ``failure_ttl_s``): redeliveries of a job abandoned before it ran."""
    return f"{PREFIX}:worker:redeliveries:{job_id}"


def factor_chunk(key: str, i: int) -> str:
    """String: chunk ``i`` of one factor-cache entry's safetensors bytes."""
    return f"{PREFIX}:factors:chunk:{key}:{i}"


def factor_chunk_prefix(key: str) -> str:
    """``factor_chunk(key, i)`` is this plus ``i`` (for Lua scripts that delete an entry)."""
    return f"{PREFIX}:factors:chunk:{key}:"


def factor_owners(key: str) -> str:
    """Set: the owners that wrote or read one factor-cache entry; only they see it in
    ``GET /v1/factors``, and it is deleted when the last of them lets it go."""
    return f"{PREFIX}:factors:owners:{key}"


def output_reservation(owner_dir: str, path_digest: str) -> str:
    """String: the job id holding ``output.path`` (sha256 ``path_digest``) under one owner's
    output directory, from submit until that job is no longer queued or running."""
    return f"{PREFIX}:output:{owner_dir}:{path_digest}"


# --- webhooks (service.webhooks) -------------------------------------------------------------
WEBHOOK_OUTBOX = f"{PREFIX}:webhooks:outbox"
"""Stream (capped at ~100k entries): job events subscribers can receive, appended in the same
transaction as the job change; read by the delivery workers' consumer group."""


def webhook(webhook_id: str) -> str:
    """String: JSON of one webhook endpoint (including its signing secret)."""
    return f"{PREFIX}:webhook:{webhook_id}"


def webhooks_owner(owner: str) -> str:
    """Sorted set (scores 0, ordered by id): one owner's webhook endpoints."""
    return f"{PREFIX}:webhooks:owner:{owner}"


def webhooks_job(job_id: str) -> str:
    """Set: ids of the endpoints a job's spec.notify created."""
    return f"{PREFIX}:webhooks:job:{job_id}"


def webhook_deliveries(webhook_id: str) -> str:
    """Sorted set (scores 0, ordered by id = creation time): one endpoint's delivery log."""
    return f"{PREFIX}:webhook:{webhook_id}:deliveries"


def webhook_delivery(delivery_id: str) -> str:
    """String (TTL ``webhook_log_ttl_s``): JSON of one delivery and its attempts."""
    return f"{PREFIX}:webhook-delivery:{delivery_id}"
