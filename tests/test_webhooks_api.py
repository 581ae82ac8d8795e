"""``/v1/webhooks`` against a real Redis: the secret is shown once, keys are isolated (404), target
URLs are validated with errors naming the field, and the deployment's address policy holds both at
registration (literal IPs) and at delivery time (every resolved address, SSRF)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.webhooks.urls import address_allowed, check_url
from service.main import create_app
from service.webhooks import delivery
from service.webhooks.addresses import AddressRefused, check_target
from service.webhooks.outbox import OutboxSweeper
from service.webhooks.queue import get_queue
from tests.gateway_helpers import auth, job_body, make_settings
from tests.tiny_models import save_tiny
from tests.webhook_receiver import receiver


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("wh-api-model") / "llama", family="llama")


def _settings(tmp_path: Path, redis_url: str, llama_dir: Path, **kw: object) -> Settings:
    s = make_settings(tmp_path, redis_url, webhook_queue_name="curvedit-webhooks-test", **kw)
    if not (s.model_root / "llama").exists():
        shutil.copytree(llama_dir, s.model_root / "llama")
    return s


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, llama_dir: Path) -> Settings:
    return _settings(tmp_path, redis_url, llama_dir)  # the default policy: public addresses only


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


PUBLIC_URL = "https://hooks.example.com/curvedit"


def test_crud_secret_shown_once(client: TestClient) -> None:
    created = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "description": "ci"}, headers=auth())
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["events"] == ["succeeded", "failed", "cancelled"] and hook["job_id"] is None
    one = client.get(f"/v1/webhooks/{hook['id']}", headers=auth()).json()
    assert "secret" not in one and one["url"] == PUBLIC_URL and one["description"] == "ci"
    second = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["trial"]}, headers=auth()).json()
    assert second["secret"] != hook["secret"]
    listed = client.get("/v1/webhooks", headers=auth()).json()
    assert [w["id"] for w in listed["data"]] == [second["id"], hook["id"]]  # newest first
    assert all("secret" not in w for w in listed["data"])
    page = client.get("/v1/webhooks", params={"limit": 1}, headers=auth()).json()
    assert [w["id"] for w in page["data"]] == [second["id"]] and page["next_cursor"] == second["id"]
    rest = client.get("/v1/webhooks", params={"cursor": page["next_cursor"]}, headers=auth()).json()
    assert [w["id"] for w in rest["data"]] == [hook["id"]] and rest["next_cursor"] is None
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=auth()).status_code == 204
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=auth()).status_code == 404
    assert [w["id"] for w in client.get("/v1/webhooks", headers=auth()).json()["data"]] == [second["id"]]


def test_another_key_cannot_see_or_redeliver(
    tmp_path: Path, redis_url: str, llama_dir: Path, redis_client: redis.Redis
) -> None:
    settings = _settings(tmp_path, redis_url, llama_dir, webhook_allow_private=True)
    delivery.configure(settings)
    with receiver() as rx, TestClient(create_app(settings)) as client:
        hook = client.post("/v1/webhooks", json={"url": rx.url}, headers=auth("alice")).json()
        job = JobStore(redis_client).create("alice", {"model": {"path": "llama"}})
        JobStore(redis_client).mark_cancelled(job["id"])
        assert OutboxSweeper(redis_client, settings).sweep(block_ms=10) == 1
        SimpleWorker([get_queue(redis_client, settings)], connection=redis_client, serializer=JSONSerializer).work(
            burst=True
        )
        assert len(rx.requests) == 1
        log = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth("alice")).json()["data"]
        assert len(log) == 1 and log[0]["status"] == "succeeded" and log[0]["type"] == "edit_job.cancelled"
        did = log[0]["id"]
        base = f"/v1/webhooks/{hook['id']}"
        for method, path in [
            ("GET", base),
            ("GET", f"{base}/deliveries"),
            ("POST", f"{base}/deliveries/{did}/redeliver"),
            ("DELETE", base),
        ]:
            resp = client.request(method, path, headers=auth("bob"))
            assert resp.status_code == 404, (method, path, resp.text)
            assert resp.json()["error"]["code"] == "not_found"
        assert client.get("/v1/webhooks", headers=auth("bob")).json()["data"] == []
        # bob's own job events never reach alice's endpoint
        bob_job = JobStore(redis_client).create("bob", {"model": {"path": "llama"}})
        JobStore(redis_client).mark_cancelled(bob_job["id"])
        OutboxSweeper(redis_client, settings).sweep(block_ms=10)
        assert len(client.get(f"{base}/deliveries", headers=auth("alice")).json()["data"]) == 1
        # alice can redeliver; the same message id arrives again
        again = client.post(f"{base}/deliveries/{did}/redeliver", headers=auth("alice"))
        assert again.status_code == 202 and again.json()["status"] == "pending"
        SimpleWorker([get_queue(redis_client, settings)], connection=redis_client, serializer=JSONSerializer).work(
            burst=True
        )
        assert [r.headers["webhook-id"] for r in rx.requests] == [did, did]
        assert client.get(f"{base}/deliveries/nope/redeliver", headers=auth("alice")).status_code == 405
        missing = client.post(f"{base}/deliveries/msg_0123/redeliver", headers=auth("alice"))
        assert missing.status_code == 404


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example.com/x", "scheme must be http or https"),
        ("https://user:pw@hooks.example.com/x", "user name or password"),
        ("https://token@hooks.example.com/x", "user name or password"),
        ("https:///x", "no host"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("http://127.0.0.1:8080/x", "private, loopback or link-local"),
        ("http://10.1.2.3/x", "private, loopback or link-local"),
        ("http://169.254.169.254/latest/meta-data", "private, loopback or link-local"),
        ("http://[::1]/x", "private, loopback or link-local"),
    ],
)
def test_bad_target_urls_are_422_naming_the_field(client: TestClient, url: str, says: str) -> None:
    resp = client.post("/v1/webhooks", json={"url": url}, headers=auth())
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "url" and says in resp.json()["error"]["message"]
    body = job_body("llama") | {"notify": {"url": url}}
    resp = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "notify.url" and says in resp.json()["error"]["message"]


def test_bad_event_names_and_duplicates_are_422(client: TestClient) -> None:
    resp = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["finished"]}, headers=auth())
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "events[0]"
    resp = client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": ["failed", "failed"]}, headers=auth())
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "events"


def test_address_policy() -> None:
    for refused in (
        "127.0.0.1",
        "10.0.0.5",
        "192.168.1.1",
        "172.16.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "fc00::1",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
    ):
        assert not address_allowed(refused, allow_private=False), refused
    for public in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert address_allowed(public, allow_private=False), public
    assert address_allowed("127.0.0.1", allow_private=True)
    assert check_url("http://localhost:9/x", allow_private=False)  # names are checked when delivering
    with pytest.raises(AddressRefused, match="resolves to 127.0.0.1"):
        check_target("http://localhost:9/x", allow_private=False)
    assert check_target("http://93.184.216.34/x", allow_private=False) == ["93.184.216.34"]


def test_delivery_to_a_name_that_resolves_privately_is_refused(
    settings: Settings, client: TestClient, redis_client: redis.Redis
) -> None:
    """SSRF: 'localhost' passes registration (a name) but the delivery resolves it and refuses."""
    delivery.configure(settings)
    with receiver() as rx:
        url = rx.url.replace("127.0.0.1", "localhost")
        hook = client.post("/v1/webhooks", json={"url": url, "events": ["failed"]}, headers=auth()).json()
        store = JobStore(redis_client)
        job = store.create("alice", {"model": {"path": "llama"}})
        store.fail(job["id"], "boom", "it broke")
        OutboxSweeper(redis_client, settings).sweep(block_ms=10)
        SimpleWorker([get_queue(redis_client, settings)], connection=redis_client, serializer=JSONSerializer).work(
            burst=True
        )
        assert rx.requests == []
    log = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth()).json()["data"]
    assert len(log) == 1 and log[0]["status"] == "failed"
    assert "address_refused" in log[0]["attempts"][0]["error"] and "127.0.0.1" in log[0]["attempts"][0]["error"]
