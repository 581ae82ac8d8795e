"""Webhook deliveries end to end: a real receiver on loopback, the delivery worker as a real
subprocess, the gateway, and job transitions written the way an edit worker writes them.

Signatures are checked with the ``standardwebhooks`` library's own verifier (the oracle), not with
curvedit's signing code."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from contract.settings import Settings
from contract.store.jobs import JobStore
from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings
from tests.tiny_models import save_tiny
from tests.webhook_receiver import Received, delivery_worker, receiver, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("wh-model") / "llama", family="llama")


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, llama_dir: Path) -> Settings:
    s = make_settings(
        tmp_path,
        redis_url,
        webhook_allow_private=True,  # the receiver is on loopback
        webhook_backoff_s=1,
        webhook_max_attempts=5,
        webhook_queue_name="curvedit-webhooks-test",
    )
    shutil.copytree(llama_dir, s.model_root / "llama")
    return s


@pytest.fixture
def gateway(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def verified(secret: str, req: Received) -> dict[str, Any]:
    """The library verifier's verdict on a received request (raises when it does not verify)."""
    return Webhook(secret).verify(req.body, req.headers)  # type: ignore[no-any-return]


def finish_job(store: JobStore, job_id: str, outcome: str = "succeeded") -> None:
    """What an edit worker does: running, a stage, then the terminal transition."""
    assert store.mark_running(job_id, "test-worker")
    assert store.set_stage(job_id, "collect_factors")
    if outcome == "succeeded":
        assert store.succeed(job_id, {"metrics": {"recitation_exact": 0.25}})
    else:
        assert store.fail(job_id, "model_load_failed", "the model could not be loaded")


def test_notify_delivery_is_signed_and_verifies(gateway: TestClient, settings: Settings, redis_client, tmp_path: Path):  # type: ignore[no-untyped-def]
    store = JobStore(redis_client)
    with receiver() as rx, delivery_worker(settings, tmp_path / "delivery.log"):
        body = job_body("llama") | {"notify": {"url": rx.url, "events": ["succeeded", "stage_changed"]}}
        resp = gateway.post("/v1/edit-jobs", json=body, headers=auth())
        assert resp.status_code == 202, resp.text
        job = resp.json()
        secret = job["webhook"]["secret"]
        assert secret.startswith("whsec_")
        assert gateway.get(f"/v1/edit-jobs/{job['id']}", headers=auth()).json()["webhook"] is None  # shown once
        finish_job(store, job["id"])
        got = rx.wait_for(2)
        time.sleep(1.0)
        assert len(rx.requests) == 2
    messages = [verified(secret, req) for req in got]
    assert sorted(m["type"] for m in messages) == ["edit_job.stage_changed", "edit_job.succeeded"]
    done = next(m for m in messages if m["type"] == "edit_job.succeeded")
    assert done["data"]["job_id"] == job["id"] and done["data"]["status"] == "succeeded"
    assert done["data"]["result"] == {"metrics": {"recitation_exact": 0.25}}
    stage = next(m for m in messages if m["type"] == "edit_job.stage_changed")
    assert stage["data"]["event"]["data"]["stage"] == "collect_factors"
    for req in got:
        assert req.headers["content-type"] == "application/json"
        with pytest.raises(WebhookVerificationError):  # a changed byte, or another secret, does not verify
            Webhook(secret).verify(req.body.replace(b"edit_job", b"edit_jox"), req.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(req.body, req.headers)
    log = gateway.get(f"/v1/webhooks/{job['webhook']['id']}/deliveries", headers=auth()).json()["data"]
    assert {d["id"] for d in log} == {req.headers["webhook-id"] for req in got}
    assert all(d["status"] == "succeeded" and len(d["attempts"]) == 1 for d in log)
    assert all(d["attempts"][0]["status_code"] == 204 for d in log)


def test_failing_receiver_gets_the_event_on_the_fourth_attempt_with_the_same_id(  # type: ignore[no-untyped-def]
    gateway: TestClient, settings: Settings, redis_client, tmp_path: Path
):
    store = JobStore(redis_client)
    with receiver(fail_first=3) as rx, delivery_worker(settings, tmp_path / "delivery.log"):
        hook = gateway.post("/v1/webhooks", json={"url": rx.url, "events": ["failed"]}, headers=auth())
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]
        job = store.create("alice", {"model": {"path": "llama"}})
        finish_job(store, job["id"], "failed")
        got = rx.wait_for(4, timeout=60)
        time.sleep(1.5)
        assert len(rx.requests) == 4  # it stops once the receiver said 2xx
        assert [r.answered for r in got] == [503, 503, 503, 204]
        assert len({r.headers["webhook-id"] for r in got}) == 1
        payloads = [verified(secret, r) for r in got]
        assert all(p == payloads[0] for p in payloads) and payloads[0]["type"] == "edit_job.failed"
        assert payloads[0]["data"]["error"] == {"code": "model_load_failed", "message": "the model could not be loaded"}
        gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
        assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9, gaps  # back-off 1 s, 2 s, 4 s

        wh_id = hook.json()["id"]
        log = gateway.get(f"/v1/webhooks/{wh_id}/deliveries", headers=auth()).json()["data"]
        assert len(log) == 1 and log[0]["id"] == got[0].headers["webhook-id"]
        assert log[0]["status"] == "succeeded"
        assert [a["status_code"] for a in log[0]["attempts"]] == [503, 503, 503, 204]

        again = gateway.post(f"/v1/webhooks/{wh_id}/deliveries/{log[0]['id']}/redeliver", headers=auth())
        assert again.status_code == 202, again.text
        fifth = rx.wait_for(5)[4]
        assert fifth.headers["webhook-id"] == log[0]["id"] and verified(secret, fifth) == payloads[0]
        log = wait_until(
            lambda: [
                d
                for d in gateway.get(f"/v1/webhooks/{wh_id}/deliveries", headers=auth()).json()["data"]
                if len(d["attempts"]) == 5
            ],
            what="the redelivery in the log",
        )
        assert log[0]["redeliveries"] == 1 and log[0]["status"] == "succeeded"


def test_restarts_between_job_end_and_delivery_deliver_once(  # type: ignore[no-untyped-def]
    settings: Settings, redis_client, tmp_path: Path
):
    store = JobStore(redis_client)
    with receiver() as rx:
        with TestClient(create_app(settings)) as first_gateway:
            body = job_body("llama") | {"notify": {"url": rx.url}}
            job = first_gateway.post("/v1/edit-jobs", json=body, headers=auth()).json()
            secret = job["webhook"]["secret"]
        with delivery_worker(settings, tmp_path / "delivery-1.log"):
            time.sleep(1.0)  # a delivery worker that was running, then went away
        # the job ends while no gateway and no delivery worker is running
        finish_job(store, job["id"])
        assert not rx.requests
        with TestClient(create_app(settings)) as second_gateway, delivery_worker(settings, tmp_path / "delivery-2.log"):
            got = rx.wait_for(1)
            time.sleep(3.0)
            assert len(rx.requests) == 1
            assert verified(secret, got[0])["type"] == "edit_job.succeeded"
            log = second_gateway.get(f"/v1/webhooks/{job['webhook']['id']}/deliveries", headers=auth()).json()
            assert [d["status"] for d in log["data"]] == ["succeeded"]
            assert json.loads(got[0].body)["data"]["job_id"] == job["id"]
