"""Test helpers for webhooks: a real HTTP receiver on loopback (``http.server`` in a thread) that
records every request and can be told to fail its first N, and the delivery worker
(``python -m service.webhooks.worker``) as a real subprocess against the test Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from contract.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"receiver got {len(self.requests)} requests, expected {n}")


@contextmanager
def receiver(*, fail_first: int = 0) -> Iterator[Receiver]:
    """A loopback HTTP server for the block; answers 503 to its first ``fail_first`` POSTs, then 204."""
    state = Receiver(url="", fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with state.lock:
                failing = len(state.requests) < state.fail_first
                code = state.fail_status if failing else 204
                state.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, code, time.monotonic())
                )
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def delivery_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CURVEDIT_REDIS_URL=str(settings.redis_url),
        CURVEDIT_WEBHOOK_QUEUE_NAME=settings.webhook_queue_name,
        CURVEDIT_WEBHOOK_ALLOW_PRIVATE=str(settings.webhook_allow_private).lower(),
        CURVEDIT_WEBHOOK_BACKOFF_S=str(settings.webhook_backoff_s),
        CURVEDIT_WEBHOOK_BACKOFF_MAX_S=str(settings.webhook_backoff_max_s),
        CURVEDIT_WEBHOOK_MAX_ATTEMPTS=str(settings.webhook_max_attempts),
        CURVEDIT_WEBHOOK_TIMEOUT_S=str(settings.webhook_timeout_s),
        PYTHONPATH=str(REPO),
    )
    return env


@contextmanager
def delivery_worker(
    settings: Settings, log_path: Path, *, name: str = "test-delivery"
) -> Iterator[subprocess.Popen[bytes]]:
    """The delivery worker as a subprocess for the block (SIGTERM, then SIGKILL, afterwards)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.webhooks.worker", "--name", name],
            cwd=REPO,
            env=delivery_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
