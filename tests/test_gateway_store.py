"""JobStore and RedisReporter against a real Redis: transitions, guards, events, pagination."""

from __future__ import annotations

import redis

from contract import keys
from contract.store.jobs import JobStore
from contract.store.reporter import RedisReporter


def test_lifecycle_and_terminal_guard(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    job = store.create("alice", {"x": 1})
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert store.mark_running(job["id"], "w1")
    assert store.set_stage(job["id"], "load_model")
    assert store.set_progress(job["id"], 0.5, tokens_done=10, tokens_total=20)
    rec = store.get(job["id"])
    assert rec is not None
    assert rec["status"] == "running" and rec["stage"] == "load_model" and rec["attempts"] == 1
    assert rec["progress"]["tokens_done"] == 10 and rec["progress"]["eta_s"] is not None
    assert store.set_stage(job["id"], "collect_factors", cached=True)
    assert store.succeed(job["id"], {"metrics": {"ppl": float("inf")}, "artifacts": {}})
    rec = store.get(job["id"])
    assert rec is not None
    assert rec["status"] == "succeeded" and rec["result"]["metrics"]["ppl"] is None
    assert rec["stages"]["load_model"]["status"] == "succeeded"
    assert rec["stages"]["collect_factors"]["cached"] is True
    # a late worker update cannot overwrite the terminal state
    assert not store.fail(job["id"], "late", "late failure")
    assert not store.set_progress(job["id"], 0.1)
    assert not store.mark_running(job["id"], "w2")
    assert store.get(job["id"])["status"] == "succeeded"  # type: ignore[index]
    assert redis_client.ttl(keys.job(job["id"])) == -1
    hist = store.stage_histogram()
    assert hist[("load_model", False)]["count"] == 1
    assert store.count_by_status()["succeeded"] == 1


def test_events_ordered(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    job = store.create("alice", {})
    for i in range(3):
        store.append_event(job["id"], "info", f"m{i}", {"i": i})
    evs = store.events(job["id"])
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["message"] for e in evs[-3:]] == ["m0", "m1", "m2"]
    assert [e["seq"] for e in store.events(job["id"], after_seq=evs[-2]["seq"])] == [evs[-1]["seq"]]
    assert store.append_event("job_missing", "info", "x") is None
    assert store.wait_events(job["id"], evs[-1]["seq"], block_ms=50) == []


def test_list_pagination_and_status_filter(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    ids = [store.create("bob", {"i": i})["id"] for i in range(5)]
    store.create("carol", {})
    store.fail(ids[0], "x", "y")
    seen: list[str] = []
    cursor = None
    while True:
        items, cursor = store.list("bob", cursor=cursor, limit=2)
        seen += [i["id"] for i in items]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    failed, nxt = store.list("bob", status="failed")
    assert [j["id"] for j in failed] == [ids[0]] and nxt is None
    queued, _ = store.list("bob", status="queued")
    assert len(queued) == 4


def test_cancel_flags_and_reporter(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    job = store.create("alice", {})
    assert store.mark_running(job["id"], "w")
    rep = RedisReporter(store, job["id"], min_interval_s=0)
    rep.stage("collect_factors")
    rep.progress(0.25, tokens_done=5, tokens_total=20)
    rep.event("info", "hello", {"a": 1})
    assert not rep.cancelled()
    assert store.request_cancel(job["id"]) == "running"
    assert rep.cancelled()
    assert not store.mark_cancelled(job["id"], only_if=("queued",))
    assert store.mark_cancelled(job["id"])
    rec = store.get(job["id"])
    assert rec is not None and rec["status"] == "cancelled"
    assert rec["stages"]["collect_factors"]["status"] == "cancelled"
    assert store.request_cancel(job["id"]) == "cancelled"


def test_job_ids_made_in_one_millisecond_sort_in_creation_order() -> None:
    from contract.store.jobs import new_job_id

    ids = [new_job_id() for _ in range(5000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
