"""``examples/webhook_receiver.py`` (the receiver the docs show) as a real subprocess: it accepts a
real curvedit delivery, prints the event once even when the same message is redelivered, and
refuses a message signed with another secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from contract.settings import Settings
from contract.store.jobs import JobStore
from service.webhooks import delivery
from service.webhooks.outbox import OutboxSweeper
from service.webhooks.queue import get_queue
from service.webhooks.records import WebhookStore
from service.webhooks.signing import new_secret, sign_headers
from tests.live_gateway import free_port

REPO = Path(__file__).resolve().parents[1]


def test_example_receiver_verifies_and_deduplicates(redis_url: str, redis_client: redis.Redis) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, redis_url=redis_url, webhook_allow_private=True, webhook_queue_name="curvedit-webhooks-test"
    )
    delivery.configure(settings)
    secret, port = new_secret(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "webhook_receiver.py"), "--port", str(port)],
        env={**os.environ, "WEBHOOK_SECRET": secret},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in proc.stderr.readline()  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/hooks"
        hooks = WebhookStore(redis_client)
        hook = hooks.create("alice", url, ["succeeded"], secret)
        store = JobStore(redis_client)
        job = store.create("alice", {"model": {"path": "m"}})
        store.succeed(job["id"], {"ok": True})
        OutboxSweeper(redis_client, settings).sweep(block_ms=10)
        worker = SimpleWorker([get_queue(redis_client, settings)], connection=redis_client, serializer=JSONSerializer)
        worker.work(burst=True)
        (d,), _ = hooks.deliveries(hook["id"])
        assert d["status"] == "succeeded" and d["attempts"][0]["status_code"] == 204
        # the same message again (what a retry or redelivery sends): accepted, not printed twice
        body = d["payload"]
        again = httpx.post(url, content=body, headers=sign_headers(secret, d["id"], body))
        assert again.status_code == 204
        forged = httpx.post(url, content=body, headers=sign_headers(new_secret(), "msg_forged", body))
        assert forged.status_code == 400
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines == [{"id": d["id"], "type": "edit_job.succeeded", "job": job["id"], "status": "succeeded"}]
