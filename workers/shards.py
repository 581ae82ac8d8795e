"""Factor-collection shards as RQ jobs: K-FAC sums are additive, so a big corpus fans out.

``RQShardFanout`` (used by the job when ``settings.collect_shards > 1``) enqueues one RQ job per
shard missing from the factor cache, ``workers.shards.run_shard_job(job_id, shard, shards,
targets)``. A shard job loads the same model and corpus, collects its rows -- whole summation
segments (``contract.summation``) -- and writes each segment's sums to the factor cache as it
completes; the parent job adds all segments up in segment order (the reduce). The
parent takes back (``steal``) any shard no worker has started and collects it itself, so a job
never waits on a queue nobody serves. A shard job stops when its parent is cancelled or finished.
The fan-out ``defers``: when only shards running on other workers are left, the parent gives its
worker back and is enqueued again behind them (an RQ dependency), instead of polling.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from contract.settings import Settings, get_settings
from contract.spec import EditJobSpec
from contract.store.jobs import TERMINAL_STATUSES, JobStore
from contract.store.queue import get_queue

log = logging.getLogger(__name__)

SHARD_FUNCTION = "workers.shards.run_shard_job"


class AwaitShards(Exception):  # noqa: N818 - a signal to unwind, like JobCancelled
    """Every shard left runs on another worker: release this worker and continue when they finish
    (raised by the pipeline's sharded collection, handled by ``workers.rq_job``)."""

    def __init__(self, handles: list[str], done: int, shards: int) -> None:
        super().__init__(f"waiting for {len(handles)} of {shards} factor shards on other workers")
        self.handles = handles
        self.done = done
        self.shards = shards


def shard_rq_id(job_id: str, shard: int, shards: int) -> str:
    return f"{job_id}-shard-{shard}-of-{shards}"


class RQShardFanout:
    """``ShardFanout`` over the settings' RQ queue."""

    defers = True  # the parent may raise AwaitShards and continue as a dependent RQ job

    def __init__(self, client: redis.Redis, settings: Settings, job_id: str) -> None:
        self.client = client
        self.settings = settings
        self.job_id = job_id
        self.queue = get_queue(client, settings)

    def submit(self, shard: int, shards: int, targets: list[str]) -> str:
        rq_id = shard_rq_id(self.job_id, shard, shards)
        self.queue.enqueue_call(
            SHARD_FUNCTION,
            args=(self.job_id, shard, shards, targets),
            job_id=rq_id,
            timeout=self.settings.job_timeout_s,
            failure_ttl=self.settings.failure_ttl_s,
            result_ttl=3600,
            description=f"curvedit factor shard {shard + 1}/{shards} of {self.job_id}",
        )
        return rq_id

    def state(self, handle: str) -> str:
        try:
            status = Job.fetch(handle, connection=self.client, serializer=JSONSerializer).get_status()
        except NoSuchJobError:
            return "failed"
        if status == JobStatus.FINISHED:
            return "done"
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            return "pending"
        if status == JobStatus.STARTED:
            return "running"
        return "failed"

    def steal(self, handle: str) -> bool:
        """Remove the shard from the queue if it is still there (LREM is atomic: exactly one of
        the parent and a dequeuing worker gets it)."""
        if self.client.lrem(self.queue.key, 1, handle) != 1:
            return False
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(handle, connection=self.client, serializer=JSONSerializer).delete()
        return True


def run_shard_job(job_id: str, shard: int, shards: int, targets: list[str]) -> dict[str, Any]:
    """RQ function: collect one shard's K-FAC sums into the factor cache."""
    settings = get_settings()
    client = redis.Redis.from_url(str(settings.redis_url))
    try:
        return _run_shard(client, settings, job_id, shard, shards, targets)
    finally:
        client.close()


def _run_shard(
    client: redis.Redis, settings: Settings, job_id: str, shard: int, shards: int, targets: list[str]
) -> dict[str, Any]:
    from workers.cache import open_factor_cache
    from workers.curvature import resolve_targets
    from workers.pipeline.curvature_stage import collect_shard, curvature_inputs, pack_calibration, shard_rows
    from workers.pipeline.loading import load_model
    from workers.pipeline.reporting import JobCancelled
    from workers.pipeline.sources import resolve_texts
    from workers.pipeline.stages.load import job_images

    store = JobStore(client)
    rec = store.get(job_id)
    if rec is None or rec["status"] in TERMINAL_STATUSES or rec["cancel_requested"]:
        return {"job_id": job_id, "shard": shard, "skipped": True}
    cache = open_factor_cache(settings, client, owner=rec["owner"])
    if cache is None:
        raise RuntimeError("shard jobs need the factor cache (CURVEDIT_FACTOR_CACHE) to return their sums")
    spec = EditJobSpec.model_validate(rec["spec"])
    if settings.collect_shards != shards:
        settings = settings.model_copy(update={"collect_shards": shards})
    texts = [] if spec.calibration.images is not None else resolve_texts(spec.calibration, settings, "calibration")
    loaded = load_model(spec.model, settings)
    chosen = resolve_targets(loaded.model, modules=targets)
    images = job_images(spec, settings, loaded, None)
    inputs = curvature_inputs(spec, settings, loaded, texts, images)
    ids = pack_calibration(inputs)
    rows = ids[shard_rows(ids.shape[0], shards, shard)]
    try:
        kept = collect_shard(  # each of the shard's segments goes to the cache as it completes
            loaded.model,
            chosen,
            inputs,
            ids,
            shard,
            cache=cache,
            should_cancel=lambda: store.cancel_requested(job_id) or store.status(job_id) in TERMINAL_STATUSES,
        )
    except JobCancelled:
        return {"job_id": job_id, "shard": shard, "skipped": True}
    if kept:  # the parent finds them missing and collects the shard itself
        log.warning("factor cache refused %d segment(s) of shard %d/%d of %s", len(kept), shard + 1, shards, job_id)
    worker = os.environ.get("RQ_WORKER_ID", "")
    store.append_event(
        job_id,
        "info",
        f"factor shard {shard + 1}/{shards} collected ({int(rows.numel())} tokens) on {worker or 'a worker'}",
        {"kind": "shard", "shard": shard, "shards": shards, "tokens": int(rows.numel()), "worker": worker},
    )
    return {"job_id": job_id, "shard": shard, "tokens": int(rows.numel())}
