"""One delivery attempt: the RQ job function ``deliver(delivery_id)`` run by the delivery worker.

It loads the delivery and its endpoint, checks the target's addresses (``addresses``), signs the
stored body with the endpoint's secret (``signing``; the ``webhook-id`` is the delivery id, the
timestamp this attempt's) and POSTs it with httpx (no redirects, no proxy from the environment,
``webhook_timeout_s``). Every attempt is appended to the delivery log. A 2xx answer ends the
delivery; anything else raises ``DeliveryFailed`` so that RQ's ``Retry`` schedules the next attempt
(exponential back-off, ``service.webhooks.queue``), until the last one marks it ``failed``. A target
refused by the address policy, or an endpoint deleted meanwhile, fails at once without retries.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from rq import get_current_job

from contract.logs import log_context
from contract.settings import Settings, get_settings
from service.webhooks.addresses import AddressRefused, check_target
from service.webhooks.queue import backoff_intervals
from service.webhooks.records import FAILED, RETRYING, SUCCEEDED, Record, WebhookStore, utcnow
from service.webhooks.signing import sign_headers

USER_AGENT = "curvedit-webhooks/0.1"
_settings: Settings | None = None


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx (RQ retries the job while attempts are left)."""


def configure(settings: Settings) -> None:
    """Settings the delivery worker process runs with (default: from the environment)."""
    global _settings
    _settings = settings


def _current_settings() -> Settings:
    return _settings or get_settings()


def _retries_left() -> int:
    job = get_current_job()
    return int(job.retries_left or 0) if job is not None else 0


def deliver(delivery_id: str) -> dict[str, Any]:
    settings = _current_settings()
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver() runs as an RQ job on the webhook queue")
    store = WebhookStore(job.connection, log_ttl_s=settings.webhook_log_ttl_s)
    delivery = store.get_delivery(delivery_id)
    if delivery is None:
        return {"delivery": delivery_id, "outcome": "expired"}
    with log_context(job_id=delivery["job_id"]):  # the delivery worker's log lines name the job
        return _attempt(store, delivery, settings)


def _attempt(store: WebhookStore, delivery: Record, settings: Settings) -> dict[str, Any]:
    delivery_id = delivery["id"]
    endpoint = store.get(delivery["webhook_id"])
    if endpoint is None:
        _finish(store, delivery_id, FAILED, _no_request("the webhook endpoint was deleted"))
        return {"delivery": delivery_id, "outcome": "endpoint_deleted"}
    try:
        check_target(endpoint["url"], allow_private=settings.webhook_allow_private)
    except AddressRefused as exc:
        _finish(store, delivery_id, FAILED, _no_request(f"address_refused: {exc}"))
        return {"delivery": delivery_id, "outcome": "address_refused"}
    attempt = post(endpoint["url"], endpoint["secret"], delivery_id, delivery["payload"], settings)
    if attempt.get("status_code") is not None and 200 <= attempt["status_code"] < 300:
        _finish(store, delivery_id, SUCCEEDED, attempt)
        return {"delivery": delivery_id, "outcome": "succeeded"}
    left = _retries_left()
    if left > 0:
        intervals = backoff_intervals(settings)
        wait = intervals[max(len(intervals) - left, 0)] if intervals else 0
        next_at = (datetime.now(timezone.utc) + timedelta(seconds=wait)).isoformat(timespec="seconds")
        _finish(store, delivery_id, RETRYING, attempt, next_attempt_at=next_at.replace("+00:00", "Z"))
    else:
        _finish(store, delivery_id, FAILED, attempt)
    raise DeliveryFailed(f"delivery {delivery_id}: {attempt.get('error') or attempt.get('status_code')}")


def post(url: str, secret: str, delivery_id: str, body: str, settings: Settings) -> dict[str, Any]:
    """One signed POST; returns the attempt's log entry (status code or error, duration)."""
    headers = sign_headers(secret, delivery_id, body)
    headers.update({"content-type": "application/json", "user-agent": USER_AGENT})
    started = time.monotonic()
    entry: dict[str, Any] = {"at": utcnow(), "status_code": None, "error": None, "response": None}
    try:
        with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as client:
            response = client.post(url, content=body.encode(), headers=headers)
        entry["status_code"] = response.status_code
        entry["response"] = response.text[:512]
        if not 200 <= response.status_code < 300:
            entry["error"] = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    return entry


def _no_request(error: str) -> dict[str, Any]:
    """The log entry of an attempt that ended before any request was sent."""
    return {"at": utcnow(), "status_code": None, "error": error, "response": None, "duration_ms": 0.0}


def _finish(
    store: WebhookStore, delivery_id: str, status: str, attempt: dict[str, Any], *, next_attempt_at: str | None = None
) -> None:
    def fn(rec: Record) -> Record:
        rec["attempts"] = [*rec["attempts"], {"attempt": len(rec["attempts"]) + 1, **attempt}]
        rec["status"] = status
        rec["next_attempt_at"] = next_attempt_at
        return rec

    store.update_delivery(delivery_id, fn)
