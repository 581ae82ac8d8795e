"""The webhook outbox: written in the same transaction as the job change, only for events
subscribers can receive, and turned into deliveries at most once per entry and endpoint even when
the sweeping worker dies between reading an entry and acknowledging it."""

from __future__ import annotations

import json

import redis

from contract import keys
from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.webhooks.events import event_name
from service.webhooks.outbox import GROUP, OutboxSweeper
from service.webhooks.queue import get_queue
from service.webhooks.records import WebhookStore
from service.webhooks.signing import new_secret


def _settings(redis_url: str) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, webhook_queue_name="curvedit-webhooks-test")  # type: ignore[call-arg]


def _outbox(r: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _id, f in r.xrange(keys.WEBHOOK_OUTBOX)]


def test_event_names() -> None:
    assert event_name({"kind": "status", "status": "succeeded"}) == "succeeded"
    assert event_name({"kind": "status", "status": "cancelled"}) == "cancelled"
    assert event_name({"kind": "status", "status": "running"}) is None
    assert event_name({"kind": "status", "status": "queued"}) is None
    assert event_name({"kind": "stage", "stage": "edit"}) == "stage_changed"
    assert event_name({"kind": "trial", "trial": 3}) == "trial"
    assert event_name({"kind": "metrics"}) is None and event_name(None) is None


def test_terminal_transition_and_outbox_entry_are_one_transaction(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    job = store.create("alice", {"model": {"path": "m"}})
    assert _outbox(redis_client) == []  # "queued" is not a webhook event
    store.mark_running(job["id"], "w")
    store.set_progress(job["id"], 0.5)
    store.append_event(job["id"], "info", "metrics", {"kind": "metrics", "metrics": {"x": 1}})
    store.set_stage(job["id"], "edit")
    store.append_event(job["id"], "info", "trial 0", {"kind": "trial", "trial": 0, "metrics": {"y": 2}})
    store.succeed(job["id"], {"ok": True})
    entries = _outbox(redis_client)
    assert [e["event"] for e in entries] == ["stage_changed", "trial", "succeeded"]
    assert all(e["job"] == job["id"] for e in entries)
    # each entry points at the job event it stands for
    events = {ev["seq"]: ev for ev in store.events(job["id"])}
    for e in entries:
        assert json.loads(e["data"]) == events[int(e["seq"])]["data"]
    # a late update to a terminal job writes nothing: no second terminal entry
    assert not store.fail(job["id"], "x", "late")
    assert len(_outbox(redis_client)) == 3


def test_a_sweeper_that_died_before_acknowledging_is_recovered_without_duplicates(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = _settings(redis_url)
    hooks = WebhookStore(redis_client)
    hook = hooks.create("alice", "https://hooks.example.com/x", ["succeeded"], new_secret())
    store = JobStore(redis_client)
    job = store.create("alice", {"model": {"path": "m"}})
    store.succeed(job["id"], {"ok": True})

    first = OutboxSweeper(redis_client, settings, consumer="c1")
    first.ensure_group()
    # the worker reads the entry, creates its deliveries ... and dies before XACK
    got = redis_client.xreadgroup(GROUP, "c1", {keys.WEBHOOK_OUTBOX: ">"}, count=10)
    ((eid, fields),) = got[0][1]
    first.fan_out(eid.decode(), {k.decode(): v.decode() for k, v in fields.items()})
    assert redis_client.xpending(keys.WEBHOOK_OUTBOX, GROUP)["pending"] == 1

    restarted = OutboxSweeper(redis_client, settings, consumer="c1")
    assert restarted.sweep(block_ms=10) == 1
    assert redis_client.xpending(keys.WEBHOOK_OUTBOX, GROUP)["pending"] == 0
    deliveries, _ = hooks.deliveries(hook["id"])
    assert len(deliveries) == 1
    queue = get_queue(redis_client, settings)
    assert queue.job_ids == [deliveries[0]["id"]]
    assert restarted.sweep(block_ms=10) == 0  # nothing new
    assert len(hooks.deliveries(hook["id"])[0]) == 1 and queue.count == 1


def test_another_worker_claims_entries_left_by_a_dead_one(redis_url: str, redis_client: redis.Redis) -> None:
    settings = _settings(redis_url)
    hooks = WebhookStore(redis_client)
    hook = hooks.create("alice", "https://hooks.example.com/x", ["failed"], new_secret())
    store = JobStore(redis_client)
    job = store.create("alice", {"model": {"path": "m"}})
    store.fail(job["id"], "boom", "it broke")
    OutboxSweeper(redis_client, settings, consumer="dead").ensure_group()
    redis_client.xreadgroup(GROUP, "dead", {keys.WEBHOOK_OUTBOX: ">"}, count=10)  # read, never acked
    other = OutboxSweeper(redis_client, settings, consumer="alive")
    other.claim_idle_ms = 0
    assert other.sweep(block_ms=10) == 1
    (d,), _ = hooks.deliveries(hook["id"])
    payload = json.loads(d["payload"])
    assert payload["type"] == "edit_job.failed" and payload["data"]["error"]["code"] == "boom"
    assert get_queue(redis_client, settings).job_ids == [d["id"]]


def test_job_scoped_endpoints_only_get_their_job(redis_url: str, redis_client: redis.Redis) -> None:
    settings = _settings(redis_url)
    hooks = WebhookStore(redis_client)
    store = JobStore(redis_client)
    a = store.create("alice", {"model": {"path": "m"}})
    b = store.create("alice", {"model": {"path": "m"}})
    only_a = hooks.create("alice", "https://hooks.example.com/a", ["cancelled"], new_secret(), job_id=a["id"])
    every = hooks.create("alice", "https://hooks.example.com/all", ["cancelled"], new_secret())
    store.mark_cancelled(a["id"])
    store.mark_cancelled(b["id"])
    OutboxSweeper(redis_client, settings).sweep(block_ms=10)
    assert [d["job_id"] for d in hooks.deliveries(only_a["id"])[0]] == [a["id"]]
    assert sorted(d["job_id"] for d in hooks.deliveries(every["id"])[0]) == sorted([a["id"], b["id"]])
