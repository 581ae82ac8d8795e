"""Sharded factor collection: the reduce of shard sums equals one pass over the whole corpus bit
for bit (the fixed summation tree of ``contract.summation``), and with two real workers a job's
shards run on the other worker too (RQ jobs, cache as transport)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import torch

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.summation import SUM_SEGMENTS, shard_segments
from tests.test_pipeline_run import make_spec
from tests.test_worker_e2e import spec as job_spec
from tests.tiny_models import save_tiny
from tests.worker_process import submit, wait_terminal, worker_process
from workers.cache import open_factor_cache
from workers.curvature import resolve_targets
from workers.pipeline.curvature_stage import collect_sums, curvature_inputs, pack_calibration
from workers.pipeline.loading import load_model
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline
from workers.pipeline.sources import resolve_texts


@pytest.mark.parametrize("fisher", ["sampled", "empirical"])
def test_sharded_sums_equal_one_pass_at_any_batch_size(tmp_path: Path, fisher: str) -> None:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    settings = Settings(
        model_root=tmp_path / "models",
        output_root=tmp_path / "out",
        data_root=tmp_path,
        factor_cache=str(tmp_path / "cache"),
        collect_shards=3,
        device="cpu",
    )
    spec = make_spec(curvature={"fisher": fisher, "seed": 5}, edit={"layers": [1], "keep_mass": 0.8})
    cache = open_factor_cache(settings)
    assert cache is not None
    rep = NullReporter()
    run_pipeline(spec, settings=settings, job_id="sharded", reporter=rep, cache=cache)
    assert any(msg.startswith("factor collection in 3 shards") for _, msg, _ in rep.events)

    loaded = load_model(spec.model, settings)
    targets = resolve_targets(loaded.model, layers=[1], projections=["gate", "up"])
    texts = resolve_texts(spec.calibration, settings)
    inputs = curvature_inputs(spec, settings, loaded, texts)
    single = curvature_inputs(spec, settings.model_copy(update={"collect_shards": 1}), loaded, texts)
    single.batch_size = 3  # one pass, another batch size: the same labels, units and segments
    whole = collect_sums(loaded.model, targets, single, pack_calibration(single), progress=None, should_cancel=None)
    assert len(whole) == 3  # one shared A, two G
    for fid, (mat, count) in whole.items():
        assert inputs.key(fid, eig=False) == single.key(fid, eig=False)  # shards are not in the key
        merged = cache.get(inputs.key(fid, eig=False))
        assert merged is not None and int(merged["count"]) == count
        assert torch.equal(merged["sum"], mat), fid  # bit for bit, not just close
        segments = [cache.get(inputs.segment_key(fid, s)) for s in range(SUM_SEGMENTS)]
        assert all(seg is not None for seg in segments)  # the shards stored every segment
        assert sum(int(seg["count"]) for seg in segments if seg is not None) == count


@pytest.mark.slow
def test_shards_fan_out_to_another_worker(tmp_path: Path, redis_url: str) -> None:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-shards-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",  # holds neither outputs nor uploads (the worker checks)
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_chunk_bytes=2**16,
        worker_heartbeat_s=1,
        collect_shards=4,
    )
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    log = tmp_path / "worker.log"
    with worker_process(settings, log), worker_process(settings, log):
        job = submit(client, settings, job_spec(0.6, "sharded", max_tokens=12_000))
        rec = wait_terminal(store, job, 600, log)
    assert rec["status"] == "succeeded", rec["error"]
    shard_events = [e["data"] for e in store.events(job) if (e["data"] or {}).get("kind") == "shard"]
    assert shard_events, "no shard ran on another worker"
    assert all(e["worker"] != rec["worker"] for e in shard_events)
    assert rec["result"]["cache"]["collect_factors"]["misses"] > 0


class _DeferringFanout:
    """A fan-out whose last shard runs "on another worker" until ``finished`` is set."""

    defers = True

    def __init__(self, shards: int) -> None:
        self.remote = shards - 1
        self.finished = False
        self.stolen: list[int] = []

    def submit(self, shard: int, shards: int, targets: list[str]) -> str:
        return f"h{shard}"

    def state(self, handle: str) -> str:
        if handle == f"h{self.remote}":
            return "done" if self.finished else "running"
        return "pending"

    def steal(self, handle: str) -> bool:
        self.stolen.append(int(handle[1:]))
        return True


def test_parent_stops_instead_of_polling_and_continues_from_the_cache(tmp_path: Path) -> None:
    from workers.pipeline.curvature_stage import collect_shard, shard_rows
    from workers.shards import AwaitShards

    save_tiny(tmp_path / "models" / "tiny", "llama")
    settings = Settings(
        model_root=tmp_path / "models",
        output_root=tmp_path / "out",
        data_root=tmp_path,
        factor_cache=str(tmp_path / "cache"),
        collect_shards=3,
        device="cpu",
    )
    spec = make_spec(curvature={"fisher": "sampled", "seed": 2}, edit={"layers": [1], "keep_mass": 0.8})
    cache = open_factor_cache(settings)
    assert cache is not None
    fanout = _DeferringFanout(3)
    with pytest.raises(AwaitShards) as wait:
        run_pipeline(spec, settings=settings, job_id="defer", reporter=NullReporter(), cache=cache, fanout=fanout)
    assert wait.value.handles == ["h2"] and wait.value.done == 2 and sorted(fanout.stolen) == [0, 1]

    loaded = load_model(spec.model, settings)
    targets = resolve_targets(loaded.model, layers=[1], projections=["gate", "up"])
    inputs = curvature_inputs(spec, settings, loaded, resolve_texts(spec.calibration, settings))
    ids = pack_calibration(inputs)
    fids = list(collect_sums(loaded.model, targets, inputs, ids[:1], progress=None, should_cancel=None))
    span, last = shard_rows(ids.shape[0], 3, 2), shard_segments(3, 2)  # shard 2 = segments 5..7
    assert list(last) == [5, 6, 7] and 0 < span.start < span.stop == ids.shape[0]
    assert all(cache.get(inputs.segment_key(fid, s)) is not None for fid in fids for s in range(5))  # kept
    assert all(cache.get(inputs.segment_key(fid, s)) is None for fid in fids for s in last)
    # what the other worker's shard job does
    assert collect_shard(loaded.model, targets, inputs, ids, 2, cache=cache, should_cancel=None) == {}
    fanout.finished = True
    fanout.stolen.clear()
    rep = NullReporter()
    run_pipeline(spec, settings=settings, job_id="defer", reporter=rep, cache=cache, fanout=fanout)
    assert fanout.stolen == []  # the continuation found every shard in the cache: nothing recollected
    assert any(msg.startswith("factor collection in 3 shards: 3 cached") for _, msg, _ in rep.events)
    whole = collect_sums(loaded.model, targets, inputs, ids, progress=None, should_cancel=None)
    for fid, (mat, count) in whole.items():
        merged = cache.get(inputs.key(fid, eig=False))
        assert merged is not None and int(merged["count"]) == count
        assert torch.equal(merged["sum"], mat), fid  # the continuation's reduce: the same bits


@pytest.mark.slow
def test_one_worker_finishes_a_four_shard_job(tmp_path: Path, redis_url: str) -> None:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-one-worker-shards-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",  # holds neither outputs nor uploads (the worker checks)
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_chunk_bytes=2**16,
        worker_heartbeat_s=1,
        collect_shards=4,
    )
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    log = tmp_path / "worker.log"
    with worker_process(settings, log):
        job = submit(client, settings, job_spec(0.6, "one-worker", max_tokens=6_000))
        rec = wait_terminal(store, job, 600, log)
    assert rec["status"] == "succeeded", rec["error"]
    shards = [e["data"] for e in store.events(job) if (e["data"] or {}).get("kind") == "shards"]
    assert shards and shards[0]["shards"] == 4
    memory = [e["data"] for e in store.events(job) if (e["data"] or {}).get("kind") == "memory"]
    # the work horse's peak RSS (torch and a model loaded: well above 100 MB); no gateway, no estimate
    assert len(memory) == 1 and memory[0]["host_gb"] > 0.1 and memory[0]["estimated_gb"] is None
