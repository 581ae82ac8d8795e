"""The webhook outbox sweep: turns job events into deliveries.

The job store appends every event that subscribers can receive (``contract.webhooks.events``) to
the ``curvedit:webhooks:outbox`` stream *in the same Redis transaction* as the status change, so a
job's terminal event is in the outbox as soon as the job is terminal, whatever restarts next. The
delivery worker reads the stream through a consumer group: for each entry it creates one delivery
per subscribed endpoint and queues it, then acknowledges the entry. An entry read but never
acknowledged (the worker died mid-way) is read again by the next sweep (``XAUTOCLAIM`` after
``claim_idle_ms``, or at once by a worker with the same consumer name); delivery ids are derived
from the entry id and the endpoint id, so a re-read creates no second delivery.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import redis

from contract import keys
from contract.settings import Settings
from contract.store.jobs import TERMINAL_STATUSES, JobStore
from contract.webhooks.events import message_type
from service.webhooks.queue import enqueue_delivery, rq_job_exists
from service.webhooks.records import PENDING, WebhookStore, utcnow

log = logging.getLogger("curvedit.webhooks")

GROUP = "curvedit-webhooks"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def delivery_id(entry_id: str, webhook_id: str) -> str:
    """``msg_`` + the entry's milliseconds (12 hex) and sequence (4 hex) + 12 hex of a hash of the
    entry and endpoint ids: the same for every re-read of one entry, sortable by creation."""
    ms, _, seq = entry_id.partition("-")
    digest = hashlib.sha256(f"{entry_id}|{webhook_id}".encode()).hexdigest()[:12]
    return f"msg_{int(ms):012x}{int(seq or 0) % 0x10000:04x}{digest}"


def build_payload(job: dict[str, Any], entry: dict[str, str]) -> dict[str, Any]:
    """The message body: ``{type, timestamp, data}`` (Standard Webhooks' recommended shape)."""
    event = entry["event"]
    data: dict[str, Any] = {
        "job_id": job["id"],
        "status": job["status"],
        "stage": job["stage"],
        "event": {
            "seq": int(entry["seq"]),
            "message": entry.get("message"),
            "data": json.loads(entry.get("data") or "null"),
        },
    }
    if job["status"] in TERMINAL_STATUSES:
        data.update(
            error=job["error"],
            result=job["result"],
            created_at=job["created_at"],
            finished_at=job["finished_at"],
        )
    return {"type": message_type(event), "timestamp": entry["time"], "data": data}


class OutboxSweeper:
    """Reads the outbox as consumer ``consumer`` of the delivery workers' group."""

    def __init__(self, redis_client: redis.Redis, settings: Settings, *, consumer: str = "delivery-worker") -> None:
        self.r = redis_client
        self.settings = settings
        self.consumer = consumer
        self.jobs = JobStore(redis_client)
        self.hooks = WebhookStore(redis_client, log_ttl_s=settings.webhook_log_ttl_s)
        self.claim_idle_ms = 30_000
        self._recovered = False

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(keys.WEBHOOK_OUTBOX, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def sweep(self, block_ms: int = 1000) -> int:
        """Handle pending entries (this consumer's own first, then stale ones of others), then wait up
        to ``block_ms`` for new ones. Returns the number of entries acknowledged."""
        self.ensure_group()
        done = 0
        if not self._recovered:  # entries this consumer read before a restart
            got = self.r.xreadgroup(GROUP, self.consumer, {keys.WEBHOOK_OUTBOX: "0"}, count=500)
            done += self._handle_all(got)
            self._recovered = True
        claimed = self.r.xautoclaim(
            keys.WEBHOOK_OUTBOX, GROUP, self.consumer, min_idle_time=self.claim_idle_ms, start_id="0-0", count=100
        )
        done += self._handle(claimed[1] if claimed else [])
        got = self.r.xreadgroup(GROUP, self.consumer, {keys.WEBHOOK_OUTBOX: ">"}, count=100, block=block_ms)
        return done + self._handle_all(got)

    def _handle_all(self, got: Any) -> int:
        return sum(self._handle(entries) for _stream, entries in got or [])

    def _handle(self, entries: list[Any]) -> int:
        done = 0
        for eid, fields in entries:
            if fields is None:  # trimmed away while pending
                self.r.xack(keys.WEBHOOK_OUTBOX, GROUP, eid)
                continue
            entry = {_s(k): _s(v) for k, v in fields.items()}
            self.fan_out(_s(eid), entry)
            self.r.xack(keys.WEBHOOK_OUTBOX, GROUP, eid)
            done += 1
        return done

    def fan_out(self, entry_id: str, entry: dict[str, str]) -> list[str]:
        """One delivery per subscribed endpoint (created at most once per entry and endpoint) and its
        RQ job; returns the delivery ids."""
        job = self.jobs.get(entry["job"])
        if job is None:
            return []
        out = []
        for endpoint in self.hooks.subscribers(job["owner"], job["id"], entry["event"]):
            did = delivery_id(entry_id, endpoint["id"])
            payload = build_payload(job, entry)
            now = utcnow()
            created = self.hooks.add_delivery(
                {
                    "id": did,
                    "webhook_id": endpoint["id"],
                    "job_id": job["id"],
                    "event": entry["event"],
                    "type": payload["type"],
                    "payload": json.dumps(payload, separators=(",", ":")),
                    "status": PENDING,
                    "attempts": [],
                    "created_at": now,
                    "updated_at": now,
                    "next_attempt_at": now,
                    "redeliveries": 0,
                }
            )
            if created or self._lost_before_enqueue(did):
                enqueue_delivery(self.r, self.settings, did, rq_id=did)
            out.append(did)
        if out:
            log.info("job %s %s: %d webhook deliveries queued", job["id"], entry["event"], len(out))
        return out

    def _lost_before_enqueue(self, did: str) -> bool:
        """A delivery stored by an earlier read of this entry whose RQ job never got queued."""
        rec = self.hooks.get_delivery(did)
        return rec is not None and rec["status"] == PENDING and not rec["attempts"] and not rq_job_exists(self.r, did)
