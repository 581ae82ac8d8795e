"""``curvedit webhooks add/list/deliveries/redeliver/delete`` and the matching ``CurveditClient``
verbs against a real gateway (uvicorn in a thread) and Redis; deliveries run on an in-process RQ
worker (burst) to a loopback receiver, and ``verify_webhook`` is checked against the library."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from contract.store.jobs import JobStore
from service.cli.app import app
from service.client import CurveditAPIError, CurveditClient, WebhookVerificationError, verify_webhook
from service.webhooks import delivery
from service.webhooks.outbox import OutboxSweeper
from service.webhooks.queue import get_queue
from tests.live_gateway import KEYS, gateway_settings, live_gateway
from tests.webhook_receiver import receiver

runner = CliRunner()


def run(url: str, *args: str, key: str = KEYS["alice"]) -> tuple[int, str]:
    result = runner.invoke(app, ["--url", url, "--api-key", key, *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def _deliver(r: redis.Redis, settings) -> None:  # type: ignore[no-untyped-def]
    OutboxSweeper(r, settings).sweep(block_ms=10)
    SimpleWorker([get_queue(r, settings)], connection=r, serializer=JSONSerializer).work(burst=True)


def test_cli_and_client_verbs(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    settings = gateway_settings(
        tmp_path, redis_url, webhook_allow_private=True, webhook_queue_name="curvedit-webhooks-test"
    )
    delivery.configure(settings)
    with receiver() as rx, live_gateway(settings) as url:
        code, out = run(url, "webhooks", "add", rx.url, "--event", "failed", "--event", "stage_changed", "--json")
        assert code == 0, out
        hook = json.loads(out)
        assert hook["events"] == ["failed", "stage_changed"] and hook["secret"].startswith("whsec_")

        code, out = run(url, "webhooks", "list")
        assert code == 0 and hook["id"] in out and "whsec_" not in out

        store = JobStore(redis_client)
        job = store.create("alice", {"model": {"path": "m"}})
        store.mark_running(job["id"], "w")
        store.set_stage(job["id"], "edit")
        store.fail(job["id"], "boom", "it broke")
        _deliver(redis_client, settings)
        assert len(rx.requests) == 2
        for req in rx.requests:  # curvedit's helper and the library agree
            assert verify_webhook(req.body, req.headers, hook["secret"]) == Webhook(hook["secret"]).verify(
                req.body, req.headers
            )
        with pytest.raises(WebhookVerificationError):
            verify_webhook(req.body + b" ", req.headers, hook["secret"])

        code, out = run(url, "webhooks", "deliveries", hook["id"])
        assert code == 0, out
        ids = re.findall(r"msg_[0-9a-f]+", out)
        assert len(set(ids)) == 2 and "edit_job.failed" in out and "succeeded" in out

        code, out = run(url, "webhooks", "redeliver", hook["id"], ids[0])
        assert code == 0 and "queued" in out, out
        _deliver(redis_client, settings)
        assert rx.requests[-1].headers["webhook-id"] == ids[0] and len(rx.requests) == 3

        code, out = run(url, "webhooks", "redeliver", hook["id"], ids[0], key=KEYS["bob"])
        assert code != 0 and "no webhook" in out, out

        code, out = run(url, "webhooks", "add", "https://u:p@example.com/x")
        assert code != 0 and "url" in out and "user name or password" in out

        with CurveditClient(url, api_key=KEYS["alice"]) as client:
            assert [w["id"] for w in client.list_webhooks()["data"]] == [hook["id"]]
            assert client.get_webhook(hook["id"])["url"] == rx.url
            log = client.webhook_deliveries(hook["id"])["data"]
            assert {d["id"] for d in log} == set(ids)
            assert client.redeliver(hook["id"], ids[1])["redeliveries"] == 1
            added = client.add_webhook("https://hooks.example.com/y", events=["trial"], description="d")
            assert added["secret"].startswith("whsec_") and added["description"] == "d"
            client.delete_webhook(added["id"])
            with pytest.raises(CurveditAPIError) as err:
                client.get_webhook(added["id"])
            assert err.value.status == 404

        code, out = run(url, "webhooks", "delete", hook["id"])
        assert code == 0, out
        code, out = run(url, "webhooks", "list")
        assert code == 0 and "no webhooks" in out
