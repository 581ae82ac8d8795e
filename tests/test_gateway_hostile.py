"""Hostile and broken input against the gateway, with a real Redis: lone UTF-16 surrogates in
JSON, corrupt stored records, OS path errors, out-of-range numbers in queries and headers,
unexpected exceptions (one JSON 500 shape with a request id), and the per-key limit on open
event streams. Each case used to end in a 500, a stored-but-unrenderable job, or a stall."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

import service.main
from contract.store.jobs import JobStore
from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings
from tests.live_gateway import live_gateway
from tests.tiny_models import save_tiny


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model-src") / "llama", family="llama")


@pytest.fixture
def env(tmp_path: Path, redis_url: str, llama_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(tmp_path, redis_url)
    shutil.copytree(llama_dir, settings.model_root / "llama")
    with TestClient(create_app(settings)) as client:
        yield client, settings


def err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]


def post_raw(client: TestClient, path: str, text: str, **headers: str) -> httpx.Response:
    return client.post(path, content=text.encode(), headers={**auth(), "Content-Type": "application/json", **headers})


def job_keys(r: redis.Redis) -> list[bytes]:
    return sorted(r.scan_iter("curvedit:job*"))


# ---------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    ("needle", "replacement", "field"),
    [
        ('"hello world"', '"abc \\ud800 def"', "calibration.texts[0]"),
        ('"the quick brown fox"', '"ok \\udfff"', "calibration.texts[1]"),
        ('"llama"', '"lla\\udc80ma"', "model.path"),
        ('"layers"', '"lay\\ud800ers"', "edit.'lay\\ud800ers'"),
    ],
)
def test_lone_surrogate_in_job_body_is_422_naming_the_field_and_nothing_is_stored(
    env: Any, redis_client: redis.Redis, needle: str, replacement: str, field: str
) -> None:
    client, _ = env
    text = json.dumps(job_body())
    assert needle in text
    r = post_raw(client, "/v1/edit-jobs", text.replace(needle, replacement, 1))
    assert r.status_code == 422, r.text
    e = err(r)
    assert e["field"] == field and "surrogate" in e["message"], e
    assert job_keys(redis_client) == []  # no record, no index entry, no event stream
    assert redis_client.llen("rq:queue:curvedit-test") == 0
    listing = client.get("/v1/edit-jobs", headers=auth())
    assert listing.status_code == 200 and listing.json()["data"] == []
    # the escaped pair of a real astral character is fine: that is valid text
    ok = post_raw(client, "/v1/edit-jobs", json.dumps(job_body()).replace('"hello world"', '"smile \\ud83d\\ude00"'))
    assert ok.status_code == 202, ok.text
    assert client.get(f"/v1/edit-jobs/{ok.json()['id']}", headers=auth()).json()["spec"]["calibration"]["texts"][0] == (
        "smile \U0001f600"
    )


def test_lone_surrogate_in_a_jsonl_dataset_is_422_naming_line_and_field(env: Any, tmp_path: Path) -> None:
    client, settings = env
    body = b'{"prefix": "fine", "suffix": "also fine"}\n{"prefix": "bad \\ud800", "suffix": "x"}\n'
    r = client.post("/v1/datasets", content=body, headers={**auth(), "Content-Type": "application/x-ndjson"})
    assert r.status_code == 422, r.text
    e = err(r)
    assert e["field"] == "file" and "line 2" in e["message"] and "prefix" in e["message"], e
    assert client.get("/v1/datasets", headers=auth()).json()["data"] == []
    assert [p for p in settings.dataset_dir.iterdir() if not p.name.startswith(".")] == []


# ---------------------------------------------------------------- corrupt stored records


def _stored_job(client: TestClient) -> str:
    r = client.post("/v1/edit-jobs", json=job_body(), headers=auth())
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "garbage{"),  # not JSON at all
        ("status", '"exploded"'),  # JSON, but not a status
        ("created_at", '"yesterday-ish"'),  # not a timestamp
        ("spec", '{"calibration": {"texts": ["abc \\ud800 def"]}}'),  # what the surrogate bug stored
        ("owner", "\xff\xfe"),  # not even UTF-8
    ],
)
def test_a_corrupt_record_does_not_break_listing_and_reads_as_a_clear_error(
    env: Any, redis_client: redis.Redis, field: str, value: str
) -> None:
    client, _ = env
    good, bad = _stored_job(client), _stored_job(client)
    raw = value.encode("latin-1") if field == "owner" else value
    redis_client.hset(f"curvedit:job:{bad}", field, raw)
    listing = client.get("/v1/edit-jobs", headers=auth())
    assert listing.status_code == 200, listing.text
    assert [j["id"] for j in listing.json()["data"]] == [good]
    assert listing.json()["unreadable"] == [bad]
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/events/stream")):
        r = client.request(method, f"/v1/edit-jobs/{bad}{path}", headers=auth())
        if field == "owner":  # whose job it is cannot be told: it is nobody's
            assert r.status_code == 404 and err(r)["code"] == "not_found", (path, r.text)
            continue
        assert r.status_code == 409, (path, r.text)
        assert err(r)["code"] == "corrupt_record" and bad in err(r)["message"]
    assert client.get(f"/v1/edit-jobs/{good}", headers=auth()).status_code == 200
    # another owner never learns the corrupt job exists
    assert client.get(f"/v1/edit-jobs/{bad}", headers=auth("bob")).status_code == 404


def test_a_corrupt_event_entry_is_replaced_not_fatal(env: Any, redis_client: redis.Redis) -> None:
    client, _ = env
    job = _stored_job(client)
    JobStore(redis_client).mark_running(job, "w1")
    garbage = {"time": "t", "level": "info", "message": "m", "data": "{"}
    redis_client.xadd(f"curvedit:job:{job}:events", garbage, id="3-0")
    redis_client.hset(f"curvedit:job:{job}", "event_seq", 3)
    evs = client.get(f"/v1/edit-jobs/{job}/events", headers=auth())
    assert evs.status_code == 200, evs.text
    assert [e["seq"] for e in evs.json()] == [1, 2, 3] and evs.json()[2]["message"] == "unreadable event"


# ---------------------------------------------------------------- OS path errors


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("model", "loop"),  # a symlink to itself: ELOOP
        ("model", "loop/inner"),
        ("model", "a" * 5000),  # one component longer than NAME_MAX: ENAMETOOLONG
        ("model", "/".join(["b" * 200] * 30)),  # the whole path longer than PATH_MAX
        ("model", "~nosuchuser/m"),  # a home directory that does not exist
        ("output", "a" * 5000),
        ("output", "~nosuchuser/out"),
        ("calibration", "loop"),
        ("calibration", "c" * 5000),
    ],
)
def test_os_path_errors_are_422_naming_the_field(env: Any, redis_client: redis.Redis, section: str, value: str) -> None:
    client, settings = env
    root = {"model": settings.model_root, "output": settings.output_root, "calibration": settings.data_root}[section]
    os.symlink("loop", root / "loop")
    body = job_body()
    if section == "calibration":
        body["calibration"] = {"path": value}
        field = "calibration.path"
    else:
        body[section] = {"path": value}
        field = f"{section}.path"
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert err(r)["field"] == field, r.text
    assert "Traceback" not in r.text
    assert job_keys(redis_client) == []


# ---------------------------------------------------------------- numeric bounds


@pytest.mark.parametrize(
    ("path", "params", "headers", "field"),
    [
        ("/events", {"after": "18446744073709551615"}, {}, "after"),
        ("/events", {"after": "-1"}, {}, "after"),
        ("/events", {"limit": "99999999999999999999999"}, {}, "limit"),
        ("/events", {"limit": "-5"}, {}, "limit"),
        ("/events/stream", {"after": "18446744073709551615"}, {}, "after"),
        ("/events/stream", {}, {"Last-Event-ID": "9" * 40}, "last-event-id"),
        ("/events/stream", {}, {"Last-Event-ID": "18446744073709551615"}, "last-event-id"),
        ("/events/stream", {}, {"Last-Event-ID": "12abc"}, "last-event-id"),
        ("", {"limit": "-1"}, {}, "limit"),  # listing (the path is /v1/edit-jobs)
        ("", {"limit": str(2**70)}, {}, "limit"),
    ],
)
def test_numeric_bounds_in_query_and_headers_are_422(
    env: Any, path: str, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    client, _ = env
    job = _stored_job(client)
    url = "/v1/edit-jobs" if path == "" else f"/v1/edit-jobs/{job}{path}"
    r = client.get(url, params=params, headers={**auth(), **headers})
    assert r.status_code == 422, r.text
    assert err(r)["field"] == field


def test_unknown_query_parameters_are_422_naming_them(env: Any) -> None:
    client, _ = env
    r = client.get("/v1/edit-jobs", params={"limt": "5"}, headers=auth())  # a typo is not silently ignored
    assert r.status_code == 422 and err(r)["field"] == "limt" and "limit" in err(r)["message"]
    job = _stored_job(client)
    r = client.get(f"/v1/edit-jobs/{job}/events", params={"after": "1", "since": "2"}, headers=auth())
    assert r.status_code == 422 and err(r)["field"] == "since"
    assert client.get(f"/v1/edit-jobs/{job}/events", params={"after": "1"}, headers=auth()).status_code == 200


def test_a_body_that_is_not_utf8_is_a_documented_422(env: Any) -> None:
    client, _ = env
    json_headers = {**auth(), "Content-Type": "application/json"}
    r = client.post("/v1/edit-jobs", content=b'{"model": {"path": "\xff\xfe"}}', headers=json_headers)
    assert r.status_code == 422 and "UTF-8" in err(r)["message"], r.text  # was an undocumented 400
    utf16 = json.dumps(job_body()).encode("utf-16")  # JSON in UTF-16 stays accepted, as json.loads reads it
    assert post_raw(client, "/v1/edit-jobs", "").status_code == 422
    r = client.post("/v1/edit-jobs", content=utf16, headers=json_headers)
    assert r.status_code == 202, r.text


def test_the_largest_accepted_after_is_a_plain_empty_answer(env: Any) -> None:
    client, _ = env
    job = _stored_job(client)
    spec = client.get("/openapi.json").json()["paths"]["/v1/edit-jobs/{job_id}/events"]["get"]["parameters"]
    bound = next(p for p in spec if p["name"] == "after")["schema"]["maximum"]
    r = client.get(f"/v1/edit-jobs/{job}/events", params={"after": bound}, headers=auth())
    assert r.status_code == 200 and r.json() == []


# ---------------------------------------------------------------- catch-all and request ids


def test_unexpected_exception_is_a_json_500_with_request_id_and_no_internals(
    env: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = env

    def explode(*_: Any, **__: Any) -> Any:
        raise OSError(5, "Input/output error", "/srv/secret/models/llama/config.json")

    monkeypatch.setattr("service.api.routes.jobs.validate_submission", explode)
    with caplog.at_level(logging.ERROR, logger="curvedit.gateway"):
        r = client.post("/v1/edit-jobs", json=job_body(), headers=auth())
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    e = err(r)
    assert e["code"] == "internal" and e["request_id"] == r.headers["X-Request-ID"]
    assert "/srv/secret" not in r.text and "Traceback" not in r.text and "OSError" not in r.text
    logged = [rec for rec in caplog.records if e["request_id"] in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "/srv/secret" in str(logged[0].exc_info[1])


def test_every_response_carries_a_request_id_and_a_sane_one_is_kept(env: Any) -> None:
    client, _ = env
    mine = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert mine.headers["X-Request-ID"] == "trace-42.a:b"
    for hostile in ("x" * 500, "has space", "semi;colon"):
        got = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["X-Request-ID"]
        assert got != hostile and len(got) == 32
    ids = {client.get("/v1/edit-jobs/job_nope", headers=auth()).headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3  # a 404 has one too, fresh per request
    assert "X-Request-ID" in client.post("/v1/edit-jobs", content=b"{", headers=auth()).headers


# ---------------------------------------------------------------- open streams: no threads, a limit


@pytest.fixture
def live(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A uvicorn gateway in a thread with a probe route that reports the worker-thread tokens in use."""
    real = service.main.create_app

    def with_probe(settings: Any) -> FastAPI:
        app = real(settings)

        @app.get("/test/threads-in-use")
        async def threads_in_use() -> dict[str, float]:
            return {"borrowed": anyio.to_thread.current_default_thread_limiter().borrowed_tokens}

        return app

    monkeypatch.setattr(service.main, "create_app", with_probe)
    settings = make_settings(tmp_path, redis_url, max_streams_per_key=50)
    with live_gateway(settings) as url:
        yield url, settings


def _running_job(redis_url: str, owner: str = "alice") -> str:
    store = JobStore(redis.Redis.from_url(redis_url))
    job = store.create(owner, {"model": {"path": "llama"}})
    store.mark_running(job["id"], "w1")
    return str(job["id"])


class _Streams:
    """``n`` SSE streams held open from threads; each signals once its first ``event: job`` arrived."""

    def __init__(self, url: str, job_id: str, n: int, owner: str = "alice") -> None:
        self.client = httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=n + 5))
        self.stop = threading.Event()
        self.ready = threading.Semaphore(0)
        self.statuses: list[int] = []
        self.threads = [
            threading.Thread(target=self._follow, args=(job_id, owner), daemon=True) for _ in range(n)
        ]
        for t in self.threads:
            t.start()

    def _follow(self, job_id: str, owner: str) -> None:
        with self.client.stream("GET", f"/v1/edit-jobs/{job_id}/events/stream", headers=auth(owner)) as resp:
            self.statuses.append(resp.status_code)
            for line in resp.iter_lines():
                if line == "event: job":
                    self.ready.release()
                if self.stop.is_set():
                    return

    def wait_ready(self, n: int) -> None:
        for _ in range(n):
            assert self.ready.acquire(timeout=30), "a stream did not deliver its first event"

    def close(self, redis_url: str, job_id: str) -> None:
        self.stop.set()
        JobStore(redis.Redis.from_url(redis_url)).append_event(job_id, "info", "wake the streams")
        for t in self.threads:
            t.join(timeout=30)
        self.client.close()


def test_open_event_streams_hold_no_worker_threads(live: tuple[str, Any], redis_url: str) -> None:
    url, _ = live
    job_id = _running_job(redis_url)
    streams = _Streams(url, job_id, 45)  # more than AnyIO's 40 worker threads
    try:
        streams.wait_ready(45)
        assert httpx.get(f"{url}/test/threads-in-use").json()["borrowed"] == 0
        r = httpx.get(f"{url}/v1/edit-jobs/{job_id}", headers=auth(), timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "running"
    finally:
        streams.close(redis_url, job_id)
    assert streams.statuses == [200] * 45


def test_open_streams_per_key_are_limited_with_a_429(live: tuple[str, Any], redis_url: str) -> None:
    url, settings = live
    limit = settings.max_streams_per_key
    job_id = _running_job(redis_url)
    streams = _Streams(url, job_id, limit)
    try:
        streams.wait_ready(limit)
        over = httpx.get(f"{url}/v1/edit-jobs/{job_id}/events/stream", headers=auth(), timeout=10)
        assert over.status_code == 429, over.text
        e = err(over)
        assert e["code"] == "too_many_streams" and str(limit) in e["message"]
        assert "Retry-After" in over.headers
        # the limit is per key: bob's own job streams fine meanwhile
        bobs = _running_job(redis_url, "bob")
        with httpx.stream("GET", f"{url}/v1/edit-jobs/{bobs}/events/stream", headers=auth("bob")) as resp:
            assert resp.status_code == 200
    finally:
        streams.close(redis_url, job_id)
    # closed streams give their slots back
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while r.zcard("curvedit:streams:owner:alice") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.zcard("curvedit:streams:owner:alice") == 0
    with httpx.stream("GET", f"{url}/v1/edit-jobs/{job_id}/events/stream", headers=auth(), timeout=10) as resp:
        assert resp.status_code == 200


def test_an_idempotent_replay_waits_for_the_first_request_without_holding_a_thread(
    live: tuple[str, Any], redis_url: str
) -> None:
    import hashlib

    from contract import keys
    from service.api.routes.jobs import _canonical_sha
    from service.schemas.jobs import EditJobCreate

    url, _ = live
    body = job_body()
    job_id = "job_0000000000000000aaaaaaaaaaaaaaaa"
    body_sha = _canonical_sha(EditJobCreate.model_validate(body).model_dump(mode="json"))
    saved = {"body_sha256": body_sha, "job_id": job_id}
    r = redis.Redis.from_url(redis_url)
    r.set(keys.idempotency("alice", hashlib.sha256(b"idem-1").hexdigest()), json.dumps(saved))
    got: list[httpx.Response] = []
    posting = threading.Thread(
        target=lambda: got.append(
            httpx.post(f"{url}/v1/edit-jobs", json=body, headers={**auth(), "Idempotency-Key": "idem-1"}, timeout=30)
        )
    )
    posting.start()  # the first request with this key "is still storing its job": the second one waits
    time.sleep(0.5)
    assert posting.is_alive()
    assert httpx.get(f"{url}/test/threads-in-use").json()["borrowed"] == 0
    JobStore(r).create("alice", {"model": {"path": "llama"}}, job_id=job_id)
    posting.join(timeout=10)
    assert got and got[0].status_code == 200, got
    assert got[0].json()["id"] == job_id and got[0].headers["Idempotent-Replayed"] == "true"


def test_update_hub_shutdown_is_bounded_even_if_its_reader_swallows_the_cancel(redis_url: str) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from service.event_stream import UpdateHub

    async def scenario() -> float:
        hub = UpdateHub(aioredis.Redis.from_url(redis_url))

        async def stubborn() -> None:  # a reader that eats CancelledError (for 3 s, then gives up)
            until = time.monotonic() + 3
            while time.monotonic() < until:
                try:
                    await asyncio.sleep(until - time.monotonic())
                except asyncio.CancelledError:
                    continue

        hub._task = asyncio.get_running_loop().create_task(stubborn())
        t0 = time.monotonic()
        await hub.close(timeout=0.3)
        elapsed = time.monotonic() - t0
        await hub.r.aclose()
        return elapsed

    assert asyncio.run(scenario()) < 2  # the lifespan shutdown waits 0.3 s, not for the reader
