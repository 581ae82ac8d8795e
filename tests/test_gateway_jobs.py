"""Edit-job routes against a real Redis: submission, validation errors naming the field,
idempotency, pagination, cancel, events (JSON and SSE), auth isolation."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.serializers import JSONSerializer

from contract.store.jobs import JobStore
from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings
from tests.tiny_models import save_tiny


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model-src")
    for family in ("llama", "gpt2", "gpt_neox"):
        save_tiny(root / family, family=family)
    return root


@pytest.fixture
def env(tmp_path: Path, redis_url: str, model_dirs: Path) -> Iterator[tuple[TestClient, object]]:
    settings = make_settings(tmp_path, redis_url)
    for d in model_dirs.iterdir():
        shutil.copytree(d, settings.model_root / d.name)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def err(resp) -> dict:  # type: ignore[no-untyped-def]
    body = resp.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_submit_get_and_queue(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    r = client.post("/v1/edit-jobs", json=job_body("llama"), headers=auth())
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/edit-jobs/{job['id']}"
    assert job["status"] == "queued" and job["owner"] == "alice"
    assert job["spec"]["output"]["path"] == job["id"]
    got = client.get(f"/v1/edit-jobs/{job['id']}", headers=auth())
    assert got.status_code == 200 and got.json()["id"] == job["id"]
    q = Queue(settings.queue_name, connection=redis_client, serializer=JSONSerializer)
    assert q.job_ids == [job["id"]]
    rq_job = q.fetch_job(job["id"])
    assert rq_job.func_name == "workers.rq_job.run_edit_job" and rq_job.args == [job["id"]]
    assert rq_job.timeout == settings.job_timeout_s and rq_job.failure_ttl == settings.failure_ttl_s


@pytest.mark.parametrize(
    ("model", "edit", "field"),
    [
        ("gpt2", {"layers": [0], "projections": ["gate"]}, "edit.projections[0]"),
        ("gpt_neox", {"layers": [0], "projections": ["gate", "up"]}, "edit.projections[0]"),
        ("llama", {"layers": [7]}, "edit.layers[0]"),
        ("llama", {"layers": [-5]}, "edit.layers[0]"),
        ("llama", {"modules": ["model.layers.*.mlp.nope"]}, "edit.modules[0]"),
        ("llama", {"overrides": [{"layer": 9, "keep_mass": 0.5}]}, "edit.overrides[0].layer"),
    ],
)
def test_unknown_layer_or_projection(env, model: str, edit: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    body = job_body(model, **edit)
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    e = err(r)
    assert e["field"] == field
    if "projections" in field:
        assert "up" in e["message"] and "down" in e["message"]  # lists what the model has
    if "layers" in field:
        assert "4 layers" in e["message"]


def test_valid_targets_per_family(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    for model, edit in [
        ("gpt2", {"layers": [0, -1], "projections": ["up", "down"]}),
        ("gpt_neox", {"layers": [1], "projections": ["down"]}),
        ("llama", {"modules": ["model.layers.3.mlp.gate_proj", "model.layers.*.mlp.up_proj"]}),
    ]:
        r = client.post("/v1/edit-jobs", json=job_body(model, **edit), headers=auth())
        assert r.status_code == 202, (model, r.text)


def test_spec_validation_errors(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    cases = [
        (job_body(keep_mass=1.5), "edit.keep_mass"),
        (job_body(keep_mass=0), "edit.keep_mass"),
        (job_body(keep_mass=[0.5, 1.2]), "edit.keep_mass[1]"),  # the list member at fault, not the float branch
        ({**job_body(), "surprise": 1}, "surprise"),
        ({**job_body(), "model": {"path": "llama", "colour": "red"}}, "model.colour"),
    ]
    for body, field in cases:
        r = client.post("/v1/edit-jobs", json=body, headers=auth())
        assert r.status_code == 422, r.text
        e = err(r)
        assert e["code"] == "validation_error" and e["field"] == field, e
        assert e["details"]
    r = client.post(
        "/v1/edit-jobs", content=b'{"model": {"path": "llama"},', headers={**auth(), "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    e = err(r)
    assert "malformed JSON" in e["message"] and e["details"][0]["type"] == "json_invalid"
    # regression: the character offset used to be reported as the field ("[28]")
    assert e["field"] is None and "at character 28" in e["message"], e


def test_keep_mass_errors_name_the_real_problem(env) -> None:  # type: ignore[no-untyped-def]
    """Regression: a bad sweep value was reported as 'edit.keep_mass: Input should be a valid number'
    (the float branch of float | list[float]) instead of naming the list member out of range."""
    client, _ = env
    r = client.post("/v1/edit-jobs", json=job_body(keep_mass=[0.9, 1.5]), headers=auth())
    e = err(r)
    assert r.status_code == 422 and e["field"] == "edit.keep_mass[1]", e
    assert "less than or equal to 1" in e["message"], e
    r = client.post("/v1/edit-jobs", json=job_body(keep_mass=0), headers=auth())
    e = err(r)
    assert e["field"] == "edit.keep_mass" and "greater than 0" in e["message"], e
    r = client.post("/v1/edit-jobs", json=[1, 2], headers=auth())
    e = err(r)
    assert r.status_code == 422 and e["message"].startswith("request body: "), e


def test_empty_layer_list_is_rejected_at_submit(env) -> None:  # type: ignore[no-untyped-def]
    """Regression: edit.layers = [] was accepted (202) and the job failed later in the worker."""
    client, _ = env
    r = client.post("/v1/edit-jobs", json=job_body(layers=[]), headers=auth())
    assert r.status_code == 422, r.text
    e = err(r)
    assert e["field"] == "edit.layers" and "must not be empty" in e["message"], e


def test_path_and_model_errors(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    outside = tmp_path / "elsewhere"
    save_dir = outside / "m"
    save_dir.mkdir(parents=True)
    (save_dir / "config.json").write_text("{}")
    os.symlink(save_dir, settings.model_root / "escape")
    (settings.model_root / "empty").mkdir()
    cases = [
        ("../elsewhere/m", "model.path", "path_outside_root"),
        (str(save_dir), "model.path", "path_outside_root"),
        ("escape", "model.path", "path_outside_root"),
        ("missing", "model.path", "model_not_found"),
        ("empty", "model.path", "model_not_found"),
    ]
    for path, field, code in cases:
        r = client.post("/v1/edit-jobs", json=job_body(path), headers=auth())
        assert r.status_code == 422, (path, r.text)
        e = err(r)
        assert (e["field"], e["code"]) == (field, code), (path, e)
    assert "config.json" in err(client.post("/v1/edit-jobs", json=job_body("empty"), headers=auth()))["message"]

    body = job_body()
    body["calibration"] = {"path": "../x.txt"}
    e = err(client.post("/v1/edit-jobs", json=body, headers=auth()))
    assert e["field"] == "calibration.path"
    body["calibration"] = {"path": "nope.txt"}
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422 and err(r)["field"] == "calibration.path"
    body = job_body()
    body["output"] = {"path": "../../out"}
    assert err(client.post("/v1/edit-jobs", json=body, headers=auth()))["field"] == "output.path"
    body = job_body()
    body["model"]["trust_remote_code"] = True
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 403 and err(r)["field"] == "model.trust_remote_code"
    assert "CURVEDIT_ALLOW_REMOTE_CODE" in err(r)["message"]


def test_unknown_or_foreign_dataset(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    up = client.post("/v1/datasets?kind=text", content=b"some text\n\nmore", headers=auth("bob"))
    assert up.status_code == 201, up.text
    for ds in ("ds_doesnotexist1", up.json()["id"]):
        body = job_body()
        body["calibration"] = {"dataset_id": ds}
        r = client.post("/v1/edit-jobs", json=body, headers=auth("alice"))
        assert r.status_code == 422 and err(r)["field"] == "calibration.dataset_id", r.text
    body = job_body()
    body["calibration"] = {"dataset_id": up.json()["id"]}
    assert client.post("/v1/edit-jobs", json=body, headers=auth("bob")).status_code == 202


def test_body_too_large(env) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    body = job_body()
    body["calibration"]["texts"] = ["x" * (settings.max_body_bytes + 10)]
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 413
    assert str(settings.max_body_bytes) in err(r)["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"model": {"path": "llama"}, "calibration": {"texts": ["'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"]}}'

    r = client.post("/v1/edit-jobs", content=chunks(), headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text


def test_auth(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    r = client.get("/v1/edit-jobs")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.get("/v1/edit-jobs", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]
    assert err(r)["code"] == "invalid_api_key"
    job = client.post("/v1/edit-jobs", json=job_body(), headers=auth("alice")).json()
    for path in ("", "/events", "/events/stream"):
        assert client.get(f"/v1/edit-jobs/{job['id']}{path}", headers=auth("bob")).status_code == 404
    assert client.post(f"/v1/edit-jobs/{job['id']}/cancel", headers=auth("bob")).status_code == 404
    assert client.get("/v1/edit-jobs", headers=auth("bob")).json()["data"] == []
    assert [j["id"] for j in client.get("/v1/edit-jobs", headers=auth("alice")).json()["data"]] == [job["id"]]


def test_auth_disabled_is_anonymous(tmp_path: Path, redis_url: str, model_dirs: Path) -> None:
    settings = make_settings(tmp_path, redis_url, api_keys="")
    with TestClient(create_app(settings)) as client:
        r = client.get("/v1/edit-jobs")
        assert r.status_code == 200 and r.json() == {"data": [], "next_cursor": None, "unreadable": []}


def test_idempotency(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    h = {**auth(), "Idempotency-Key": "abc-1"}
    first = client.post("/v1/edit-jobs", json=job_body(), headers=h)
    assert first.status_code == 202
    again = client.post("/v1/edit-jobs", json=job_body(), headers=h)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    other = client.post("/v1/edit-jobs", json=job_body(keep_mass=0.5), headers=h)
    assert other.status_code == 422 and err(other)["code"] == "idempotency_key_reused"
    # keys are per owner
    bob = client.post("/v1/edit-jobs", json=job_body(), headers={**auth("bob"), "Idempotency-Key": "abc-1"})
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]
    assert len(client.get("/v1/edit-jobs", headers=auth()).json()["data"]) == 1


def test_idempotency_key_ttl(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    client.post("/v1/edit-jobs", json=job_body(), headers={**auth(), "Idempotency-Key": "k"})
    (key,) = list(redis_client.scan_iter(match="curvedit:idem:*"))
    assert redis_client.ttl(key) >= 24 * 3600
    job_keys = list(redis_client.scan_iter(match="curvedit:job:*"))
    assert job_keys and all(redis_client.ttl(k) == -1 for k in job_keys)


def test_pagination_and_status_filter(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    ids = [
        client.post("/v1/edit-jobs", json=job_body(keep_mass=0.5 + i / 100), headers=auth()).json()["id"]
        for i in range(5)
    ]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/edit-jobs", params=params, headers=auth()).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    JobStore(redis_client).fail(ids[1], "boom", "failed for the test")
    failed = client.get("/v1/edit-jobs", params={"status": "failed"}, headers=auth()).json()
    assert [j["id"] for j in failed["data"]] == [ids[1]] and failed["data"][0]["error"]["code"] == "boom"
    assert client.get("/v1/edit-jobs", params={"status": "bogus"}, headers=auth()).status_code == 422
    assert client.get("/v1/edit-jobs", params={"cursor": "../x"}, headers=auth()).status_code == 422
    assert client.get("/v1/edit-jobs", params={"limit": 0}, headers=auth()).status_code == 422


def test_cancel_queued_job(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, settings = env
    job = client.post("/v1/edit-jobs", json=job_body(), headers=auth()).json()
    r = client.post(f"/v1/edit-jobs/{job['id']}/cancel", headers=auth())
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    q = Queue(settings.queue_name, connection=redis_client, serializer=JSONSerializer)
    assert job["id"] not in q.job_ids
    store = JobStore(redis_client)
    assert not store.mark_running(job["id"], "late-worker")  # a worker that dequeued it anyway skips it
    assert client.get(f"/v1/edit-jobs/{job['id']}", headers=auth()).json()["status"] == "cancelled"


def test_cancel_running_job_sets_flag(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    job = client.post("/v1/edit-jobs", json=job_body(), headers=auth()).json()
    store = JobStore(redis_client)
    store.mark_running(job["id"], "w1")
    r = client.post(f"/v1/edit-jobs/{job['id']}/cancel", headers=auth())
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert store.cancel_requested(job["id"])


def test_events_json_and_sse(env, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    job = client.post("/v1/edit-jobs", json=job_body(), headers=auth()).json()
    store = JobStore(redis_client)
    store.mark_running(job["id"], "w1")
    store.set_stage(job["id"], "load_model")
    evs = client.get(f"/v1/edit-jobs/{job['id']}/events", headers=auth()).json()
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)) and evs[0]["message"] == "job queued"
    after = client.get(f"/v1/edit-jobs/{job['id']}/events", params={"after": 2}, headers=auth()).json()
    assert [e["seq"] for e in after] == [e["seq"] for e in evs[2:]]

    def finish() -> None:
        time.sleep(0.3)
        store.set_stage(job["id"], "collect_factors", cached=True)
        store.set_progress(job["id"], 0.5, tokens_done=32, tokens_total=64)
        store.append_event(job["id"], "info", "metrics", {"ppl": 12.5})
        time.sleep(0.3)
        store.succeed(job["id"], {"artifacts": {"model_dir": "x"}})

    t = threading.Thread(target=finish)
    t.start()
    with client.stream("GET", f"/v1/edit-jobs/{job['id']}/events/stream", headers=auth()) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    t.join()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    kinds = [line.split(": ", 1)[1] for b in blocks for line in b.splitlines() if line.startswith("event: ")]
    assert kinds[-1] == "end" and "job" in kinds and kinds.count("log") == len(store.events(job["id"]))
    assert '"ppl":12.5' in text and "job succeeded" in text and "served from cache" in text
    ids = [int(line[4:]) for b in blocks for line in b.splitlines() if line.startswith("id: ")]
    assert ids == sorted(ids) and ids[-1] == store.get(job["id"])["last_event_seq"]  # type: ignore[index]
    # resuming with Last-Event-ID sends only what came after
    with client.stream(
        "GET", f"/v1/edit-jobs/{job['id']}/events/stream", headers={**auth(), "Last-Event-ID": str(ids[-2])}
    ) as resp:
        text2 = "".join(resp.iter_text())
    assert text2.count("event: log") == 1 and "event: end" in text2


def test_missing_job_is_404(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    for job_id in ("job_0000", "job_x:events", "..%2F"):
        r = client.get(f"/v1/edit-jobs/{job_id}", headers=auth())
        assert r.status_code == 404 and err(r)["code"] == "not_found"


def test_hub_id_not_cached(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    body = job_body()
    body["model"] = {"hub_id": "nobody/not-a-model", "revision": "main"}
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422 and err(r)["field"] == "model.hub_id", r.text


def test_dataset_kind_must_fit_its_use(env) -> None:  # type: ignore[no-untyped-def]
    client, _ = env
    texts = client.post("/v1/datasets?kind=text", content=b"doc one", headers=auth()).json()
    pairs = client.post(
        "/v1/datasets",
        content=b'{"prefix": "a", "suffix": "b"}\n',
        headers={**auth(), "Content-Type": "application/x-ndjson"},
    ).json()
    body = job_body()
    body["calibration"] = {"dataset_id": pairs["id"]}
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422 and err(r)["code"] == "wrong_dataset_kind"
    body = job_body()
    body["evaluation"] = {"recitation": {"dataset_id": texts["id"]}}
    r = client.post("/v1/edit-jobs", json=body, headers=auth())
    assert r.status_code == 422 and err(r)["field"] == "evaluation.recitation.dataset_id"
    body["evaluation"] = {"recitation": {"dataset_id": pairs["id"]}, "perplexity": {"dataset_id": texts["id"]}}
    assert client.post("/v1/edit-jobs", json=body, headers=auth()).status_code == 202


def test_sse_keepalive_while_quiet(redis_url: str) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from service.event_stream import UpdateHub, job_events
    from service.job_reader import JobReader

    store = JobStore(redis.Redis.from_url(redis_url))
    job = store.create("alice", {})
    store.mark_running(job["id"], "w")
    seq = store.get(job["id"])["last_event_seq"]  # type: ignore[index]

    async def first_messages() -> list[str]:
        ar = aioredis.Redis.from_url(redis_url)
        gen = job_events(JobReader(ar), UpdateHub(ar), job["id"], seq, poll_s=0.02, keepalive_s=0.05)
        try:
            return [await anext(gen) for _ in range(4)]
        finally:
            await gen.aclose()
            await ar.aclose()

    first = asyncio.run(first_messages())
    assert first[0].startswith("retry:") and "event: job" in first[1]
    assert first[2] == first[3] == ": keepalive\n\n"  # nothing happens, so only keepalives follow
