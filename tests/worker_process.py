"""Test helpers: run ``python -m workers.worker_main`` as a real subprocess against the test Redis,
submit jobs the way the gateway does (``JobStore.create`` + ``contract.store.queue.enqueue_job``) and poll."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.store.queue import enqueue_job

REPO = Path(__file__).resolve().parents[1]


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CURVEDIT_REDIS_URL=str(settings.redis_url),
        CURVEDIT_QUEUE_NAME=settings.queue_name,
        CURVEDIT_MODEL_ROOT=str(settings.model_root),
        CURVEDIT_DATA_ROOT=str(settings.data_root),
        CURVEDIT_OUTPUT_ROOT=str(settings.output_root),
        CURVEDIT_DATASET_DIR=str(settings.dataset_dir),
        CURVEDIT_FACTOR_CACHE=settings.factor_cache,
        CURVEDIT_FACTOR_CHUNK_BYTES=str(settings.factor_chunk_bytes),
        CURVEDIT_WORKER_HEARTBEAT_S=str(settings.worker_heartbeat_s),
        CURVEDIT_JOB_MAX_ATTEMPTS=str(settings.job_max_attempts),
        CURVEDIT_COLLECT_SHARDS=str(settings.collect_shards),
        CURVEDIT_DEVICE="cpu",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
    )
    return env


@contextmanager
def worker_process(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live worker subprocess for the duration of the block (terminated afterwards)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.worker_main"],
            cwd=REPO,
            env=worker_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def submit(client: redis.Redis, settings: Settings, spec: dict[str, Any]) -> str:
    rec = JobStore(client).create("tester", spec)
    enqueue_job(client, settings, rec["id"])
    return rec["id"]


def wait_for(pred: Callable[[], Any], timeout: float, what: str, log_path: Path | None = None) -> Any:
    """Poll ``pred`` until truthy; fail with ``what`` (and the worker log tail) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    tail = log_path.read_text()[-4000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- worker log ---\n{tail}")


def wait_terminal(store: JobStore, job_id: str, timeout: float, log_path: Path | None = None) -> dict[str, Any]:
    return wait_for(
        lambda: (r := store.get(job_id)) and r["status"] in ("succeeded", "failed", "cancelled") and r,
        timeout,
        f"job {job_id} to finish",
        log_path,
    )


def wait_http_job(
    http: Any, job_id: str, headers: dict[str, str], log_path: Path, timeout: float = 600
) -> dict[str, Any]:
    """Poll ``GET /v1/edit-jobs/{job_id}`` through a test client until the job is terminal."""

    def final() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/v1/edit-jobs/{job_id}", headers=headers).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(final, timeout, f"job {job_id} to finish over HTTP", log_path)
