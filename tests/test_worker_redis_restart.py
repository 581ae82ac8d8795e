"""A worker survives a Redis restart: RQ's own loop quits when Redis goes away; ``run_worker``
waits for Redis to answer again and starts a fresh worker, which then runs the next job.

Uses a dedicated, real Redis server started by the test (not the shared one), so it can be
stopped and restarted on the same port."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from contract.settings import Settings
from contract.store.jobs import JobStore
from tests.live_gateway import free_port
from tests.tiny_models import save_tiny
from tests.worker_process import submit, wait_for, wait_terminal, worker_process

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _redis_server() -> str:
    found = shutil.which("redis-server") or str(REPO / ".venv" / "bin" / "redis-server")
    if not Path(found).exists():
        pytest.fail("this test needs a redis-server binary (installed with the 'embedded' extra)")
    return found


def _start_redis(port: int, data: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
         "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 10, f"redis on port {port}")
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    proc = _start_redis(port, data)
    holder = {"proc": proc}
    yield port, data
    for p in (holder["proc"],):
        p.terminate()
        p.wait(timeout=10)


def test_worker_reconnects_after_redis_restart(tmp_path: Path, own_redis: tuple[int, Path]) -> None:
    port, data = own_redis
    save_tiny(tmp_path / "models" / "tiny", "llama")
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        queue_name="restart-test",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",  # never a parent of the output root (the worker refuses that)
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        factor_cache="off",
        worker_heartbeat_s=1,
    )
    client = redis.Redis(port=port)
    store = JobStore(client)
    log = tmp_path / "worker.log"
    texts = [f"line {i} of the calibration text about foxes and dogs, number {i * 13}" for i in range(4000)]

    def job_spec(max_tokens: int, out: str) -> dict:
        return {
            "model": {"path": "tiny"},
            "calibration": {"texts": texts, "max_tokens": max_tokens, "seq_len": 32, "batch_size": 4},
            "edit": {"layers": [1], "keep_mass": 0.9},
            "output": {"path": out},
        }

    with worker_process(settings, log) as worker:
        wait_for(lambda: client.smembers("rq:workers"), 60, "the worker to register", log)
        first = submit(client, settings, job_spec(60_000, "during-outage"))
        wait_for(lambda: (store.get(first) or {}).get("stage") == "collect_factors", 120, "collect_factors", log)
        client.shutdown(nosave=True)  # Redis goes away under a running job
        time.sleep(3)
        restarted = _start_redis(port, data)
        try:
            rec = wait_terminal(store, first, 240, log)
            # the job is not lost: it ends, and if it failed it says why
            assert rec["status"] == "succeeded" or (rec["status"] == "failed" and rec["error"]["code"]), rec
            assert worker.poll() is None, "the worker process exited when Redis went away"
            second = submit(client, settings, job_spec(600, "after-restart"))
            rec2 = wait_terminal(store, second, 120, log)
            assert rec2["status"] == "succeeded", rec2.get("error")
        finally:
            restarted.terminate()
            restarted.wait(timeout=10)
