"""Tenancy: factor-cache entries are owned (list and release only your own; a shared entry stays
until its last owner lets go), outputs live under a per-owner directory (no probing another
owner's), an ``output.path`` still held by a queued or running job is refused at submit, model and
data roots may not contain the service's directories, ``/metrics`` needs a key, and a job given
up as ``worker_lost`` leaves no staging directory. Real Redis; the cache is the worker's own
``RedisFactorStore``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from fastapi.testclient import TestClient

from contract.keys import FACTORS_INDEX
from contract.outputs import owner_dir
from contract.roots import RootsOverlap, check_roots
from contract.settings import Settings
from contract.store.jobs import JobStore
from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings
from workers.cache import CacheKey
from workers.cache.redis_store import RedisFactorStore
from workers.reaper import recover_job


@pytest.fixture
def env(tmp_path: Path, redis_url: str, tiny_llama_dir: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(tmp_path, redis_url, model_root=tiny_llama_dir.parent)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def _store(r: redis.Redis, owner: str) -> RedisFactorStore:
    return RedisFactorStore(r, budget_bytes=10**8, chunk_bytes=4096, owner=owner)


def _keys(client: TestClient, owner: str) -> set[str]:
    r = client.get("/v1/factors", headers=auth(owner))
    assert r.status_code == 200, r.text
    return {e["key"] for e in r.json()["data"]}


# ------------------------------------------------------------------------------ factor cache
def test_factor_entries_are_listed_and_released_per_owner(env, redis_client: redis.Redis) -> None:
    client, _ = env
    only_alice = CacheKey("A", "model.layers.0.mlp", {"n": 1}, model="alice-private-model")
    shared = CacheKey("A", "model.layers.1.mlp", {"n": 2}, model="public-model")
    _store(redis_client, "alice").put(only_alice, {"x": torch.ones(3)})
    _store(redis_client, "alice").put(shared, {"x": torch.arange(600.0)})  # several chunks
    assert _store(redis_client, "bob").get(shared) is not None  # identical inputs: bob reuses alice's entry

    assert _keys(client, "alice") == {only_alice.digest, shared.digest}
    assert _keys(client, "bob") == {shared.digest}  # alice's private entry is invisible to bob
    listed = client.get("/v1/factors", headers=auth("bob")).json()
    assert "alice" not in str(listed) and "alice-private-model" not in str(listed)

    # bob cannot delete alice's entry: 404, as for a key that does not exist
    r = client.delete(f"/v1/factors/{only_alice.digest}", headers=auth("bob"))
    assert r.status_code == 404, r.text
    assert redis_client.hexists(FACTORS_INDEX, only_alice.digest)

    # alice releases the shared entry: gone from her list, still there for bob, bytes intact
    assert client.delete(f"/v1/factors/{shared.digest}", headers=auth("alice")).status_code == 204
    assert _keys(client, "alice") == {only_alice.digest}
    assert _keys(client, "bob") == {shared.digest}
    assert torch.equal(_store(redis_client, "bob").get(shared)["x"], torch.arange(600.0))
    assert client.delete(f"/v1/factors/{shared.digest}", headers=auth("alice")).status_code == 404

    # the last owner lets go: index field, chunks and owners set are all removed
    assert client.delete(f"/v1/factors/{shared.digest}", headers=auth("bob")).status_code == 204
    assert not redis_client.hexists(FACTORS_INDEX, shared.digest)
    assert not list(redis_client.scan_iter(f"curvedit:factors:*{shared.digest}*"))
    assert _keys(client, "bob") == set()


def test_eviction_drops_the_owners_set(redis_client: redis.Redis) -> None:
    store = _store(redis_client, "alice")
    key = CacheKey("G", "m", {"n": 3})
    store.put(key, {"x": torch.ones(4)})
    assert redis_client.smembers(f"curvedit:factors:owners:{key.digest}") == {b"alice"}
    assert store.delete(key.digest)
    assert not redis_client.exists(f"curvedit:factors:owners:{key.digest}")


# ------------------------------------------------------------------------------ outputs
def test_outputs_are_per_owner_and_cannot_be_probed(env, tiny_llama_dir: Path) -> None:
    client, settings = env
    (settings.output_root / "bob" / "taken").mkdir(parents=True)  # bob's earlier output
    r = client.post("/v1/edit-jobs", json={**job_body(tiny_llama_dir.name), "output": {"path": "taken"}},
                    headers=auth("alice"))  # fmt: skip
    assert r.status_code == 202, r.text  # alice learns nothing about bob's directory
    r = client.post("/v1/edit-jobs", json={**job_body(tiny_llama_dir.name), "output": {"path": "taken"}},
                    headers=auth("bob"))  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["code"] == "output_exists", r.text
    assert r.json()["error"]["field"] == "output.path"


def test_owner_dir_is_one_safe_component() -> None:
    assert owner_dir("alice") == "alice"
    for hostile in ("..", ".", "a/b", "../x", "", "x" * 200, "name with space"):
        d = owner_dir(hostile)
        assert "/" not in d and d not in (".", "..", "") and len(d) <= 64, d
    assert owner_dir("a/b") != owner_dir("a_b")


def test_same_output_path_is_refused_while_the_first_job_is_live(env, tiny_llama_dir: Path) -> None:
    client, _ = env
    body = {**job_body(tiny_llama_dir.name), "output": {"path": "run1"}}
    first = client.post("/v1/edit-jobs", json=body, headers=auth("alice"))
    assert first.status_code == 202, first.text
    again = client.post("/v1/edit-jobs", json=body, headers=auth("alice"))
    assert again.status_code == 409, again.text
    e = again.json()["error"]
    assert e["code"] == "output_in_use" and e["field"] == "output.path" and first.json()["id"] in e["message"]
    # the same spelling with a trailing slash is the same directory
    slash = client.post("/v1/edit-jobs", json={**body, "output": {"path": "run1/"}}, headers=auth("alice"))
    assert slash.status_code in (409, 422), slash.text
    # another owner's namespace is separate
    assert client.post("/v1/edit-jobs", json=body, headers=auth("bob")).status_code == 202
    # an Idempotency-Key used on a refused submit is not burnt
    r = client.post("/v1/edit-jobs", json=body, headers={**auth("alice"), "Idempotency-Key": "k-1"})
    assert r.status_code == 409
    # cancelling the holder frees the path
    assert client.post(f"/v1/edit-jobs/{first.json()['id']}/cancel", headers=auth("alice")).status_code in (200, 202)
    r = client.post("/v1/edit-jobs", json=body, headers={**auth("alice"), "Idempotency-Key": "k-1"})
    assert r.status_code == 202, r.text


def test_failed_holder_frees_the_path(env, redis_client: redis.Redis, tiny_llama_dir: Path) -> None:
    client, _ = env
    body = {**job_body(tiny_llama_dir.name), "output": {"path": "again"}}
    first = client.post("/v1/edit-jobs", json=body, headers=auth("alice")).json()["id"]
    JobStore(redis_client).fail(first, "internal", "x")
    assert client.post("/v1/edit-jobs", json=body, headers=auth("alice")).status_code == 202


# ------------------------------------------------------------------------------ roots
@pytest.mark.parametrize(
    "roots",
    [
        {"model_root": "."},  # the old default: "." holds .curvedit/ (state, artifacts, uploads)
        {"data_root": "."},
        {"model_root": "srv", "output_root": "srv/out"},
        {"data_root": "srv", "dataset_dir": "srv/uploads"},
        {"model_root": "srv", "state_dir": "srv"},
    ],
)
def test_roots_containing_private_dirs_are_refused(tmp_path: Path, roots: dict[str, str]) -> None:
    values = {
        "model_root": "models",
        "data_root": "data",
        "state_dir": ".curvedit",
        "output_root": ".curvedit/artifacts",
        "dataset_dir": ".curvedit/datasets",
        **roots,
    }
    settings = Settings(_env_file=None, **{k: tmp_path / v for k, v in values.items()})  # type: ignore[call-arg]
    with pytest.raises(RootsOverlap) as info:
        check_roots(settings)
    assert "refusing to start" in str(info.value) and "CURVEDIT_" in str(info.value)
    with pytest.raises(RootsOverlap):
        create_app(settings)


def test_default_roots_are_accepted() -> None:
    check_roots(Settings(_env_file=None))  # type: ignore[call-arg]


# ------------------------------------------------------------------------------ /metrics
def test_metrics_needs_a_key_unless_public(tmp_path: Path, redis_url: str) -> None:
    with TestClient(create_app(make_settings(tmp_path, redis_url))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = client.get("/metrics", headers=auth("bob"))
        assert r.status_code == 200 and "curvedit_jobs" in r.text
    with TestClient(create_app(make_settings(tmp_path, redis_url, metrics_public=True))) as client:
        assert client.get("/metrics").status_code == 200


# ------------------------------------------------------------------------------ staging
def test_worker_lost_removes_the_staging_directory(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        queue_name=f"test-{tmp_path.name}",
        output_root=tmp_path / "out",
        job_max_attempts=1,
    )
    store = JobStore(redis_client)
    rec = store.create("alice", {"output": {"path": "big"}})
    other = store.create("alice", {"output": {"path": "big2"}})
    store.mark_running(rec["id"], "w")
    store.mark_running(other["id"], "w")  # attempts now 1 = job_max_attempts: the next loss is final
    owner_root = tmp_path / "out" / "alice"
    staging = owner_root / f"big.tmp-{rec['id']}-abc123"
    (staging / "rho-0.9").mkdir(parents=True)
    (staging / "rho-0.9" / "model.safetensors").write_bytes(b"\0" * 4096)
    foreign = owner_root / f"big2.tmp-{other['id']}-def456"  # another job's export in progress
    foreign.mkdir(parents=True)
    assert recover_job(redis_client, settings, rec["id"], "the worker running this job stopped") == "failed"
    assert store.get(rec["id"])["error"]["code"] == "worker_lost"
    assert not staging.exists()
    assert foreign.exists()
