"""The webhook delivery queue: an RQ queue of its own (``Settings.webhook_queue_name``), worked by
the delivery worker, so a slow receiver never holds up an edit worker.

Each delivery is one RQ job running ``service.webhooks.delivery.deliver(delivery_id)`` with RQ's
``Retry``: up to ``webhook_max_attempts`` attempts, waiting ``webhook_backoff_s`` × 2ⁿ (capped at
``webhook_backoff_max_s``) between them. The retries are scheduled by the RQ scheduler that the
delivery worker runs.
"""

from __future__ import annotations

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from contract.settings import Settings

DELIVER_FUNCTION = "service.webhooks.delivery.deliver"


def backoff_intervals(settings: Settings) -> list[int]:
    """Seconds to wait before retry 1, 2, ... (exponential, capped)."""
    return [
        min(settings.webhook_backoff_s * 2**i, settings.webhook_backoff_max_s)
        for i in range(settings.webhook_max_attempts - 1)
    ]


def get_queue(redis_client: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.webhook_queue_name, connection=redis_client, serializer=JSONSerializer)


def enqueue_delivery(redis_client: redis.Redis, settings: Settings, delivery_id: str, *, rq_id: str) -> Job:
    """Queue the attempts of one delivery (``rq_id``: the delivery id, or ``<id>-r<n>`` for a redelivery)."""
    return get_queue(redis_client, settings).enqueue_call(
        DELIVER_FUNCTION,
        args=(delivery_id,),
        job_id=rq_id,
        timeout=int(settings.webhook_timeout_s * 2) + 30,
        result_ttl=3600,
        failure_ttl=settings.webhook_log_ttl_s,
        description=f"curvedit webhook delivery {delivery_id}",
        retry=Retry(max=settings.webhook_max_attempts - 1, interval=backoff_intervals(settings)),
    )


def rq_job_exists(redis_client: redis.Redis, rq_id: str) -> bool:
    return bool(Job.exists(rq_id, connection=redis_client))
