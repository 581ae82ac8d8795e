"""Shutdown with real processes: an idle worker exits at once on SIGTERM (it used to start a fresh
RQ worker and wait out the stack's 60 s grace until SIGKILL); a busy worker stops its job after
the current batch, leaves nothing half-written and requeues the job (attempt not counted), and the
next worker runs it; ``curvedit up`` stops without killing anything."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.store.queue import cancel_job, get_queue, live_workers
from service.cli.stack import free_port
from tests.live_gateway import stack_env
from tests.tiny_models import save_tiny
from tests.worker_process import submit, wait_for, wait_terminal, worker_process

pytestmark = pytest.mark.slow

TEXTS = [f"document {i}: the quick brown fox jumps over the lazy dog and counts {i * 7} sheep" for i in range(300)]


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> tuple[Settings, redis.Redis, Path]:
    save_tiny(tmp_path / "models" / "tiny", "llama")
    (tmp_path / "data").mkdir()
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"test-{tmp_path.name}",
        model_root=tmp_path / "models",
        data_root=tmp_path / "data",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        state_dir=tmp_path / "state",
        factor_cache="off",
        worker_heartbeat_s=1,
        job_max_attempts=1,  # a counted attempt would make the next loss final
    )
    client = redis.Redis.from_url(redis_url)
    yield settings, client, tmp_path
    client.close()


def test_idle_worker_exits_on_sigterm(env) -> None:
    settings, client, tmp = env
    log = tmp / "worker.log"
    with worker_process(settings, log) as proc:
        wait_for(lambda: live_workers(client, settings) >= 1, 120, "the worker to register", log)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"an idle worker did not exit within 20 s of SIGTERM\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]
    assert "starting a fresh worker" not in log.read_text()
    assert live_workers(client, settings) == 0


def test_busy_worker_requeues_its_job_and_the_next_worker_runs_it(env) -> None:
    settings, client, tmp = env
    store = JobStore(client)
    log = tmp / "worker.log"
    spec = {
        "model": {"path": "tiny"},
        "calibration": {"texts": TEXTS, "max_tokens": 400_000, "seq_len": 32, "batch_size": 8},
        "edit": {"layers": [1, 2], "projections": ["gate", "up"], "keep_mass": 0.7},
        "output": {"path": "pre"},
    }
    with worker_process(settings, log) as proc:
        job = submit(client, settings, spec)
        wait_for(
            lambda: (r := store.get(job))["stage"] == "collect_factors" and r["progress"]["fraction"] > 0,
            600,
            "the job to collect factors",
            log,
        )
        proc.send_signal(signal.SIGTERM)
        try:  # one batch, the horse's exit and the requeue; the whole job would take many minutes
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a busy worker did not stop its job within 120 s of SIGTERM\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]
    rec = store.get(job)
    assert rec["status"] == "queued", rec
    assert rec["error"] is None and rec["attempts"] == 0  # requeued, not failed, attempt refunded
    assert any(e["message"].startswith("requeued: the worker shut down") for e in store.events(job))
    assert any(i.startswith(f"{job}-preempted-") for i in get_queue(client, settings).get_job_ids())
    out = tmp / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_dir() and ".tmp-" in p.name]
    assert not client.exists(f"curvedit:job:{job}:preempt")

    with worker_process(settings, log):  # the next worker takes the requeued job
        wait_for(lambda: store.get(job)["status"] == "running", 300, "the requeued job to run again", log)
        assert store.get(job)["attempts"] == 1
        cancel_job(store, client, settings, job)
        assert wait_terminal(store, job, 300, log)["status"] == "cancelled"


def test_curvedit_up_stops_without_killing_idle_workers(tmp_path: Path, tiny_llama_dir: Path) -> None:
    env = stack_env(tmp_path)
    shutil.copytree(tiny_llama_dir, tmp_path / "models" / "tiny")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli.app", "up", "--port", str(port), "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                body = httpx.get(f"{url}/readyz", timeout=1).json()
                if body.get("workers") == 2:
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"the stack did not come up\n{log.read_text()[-3000:]}")
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    took = time.monotonic() - t0
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "killing" not in text, text[-3000:]  # no worker had to be SIGKILLed after the grace
    print(f"curvedit up (2 idle workers) stopped {took:.1f} s after SIGTERM")
