"""Job leases: proof that some process is alive and running a job.

The job function holds ``curvedit:worker:lease:<job id>`` while it runs; a daemon thread renews
it every third of its TTL. A job record that says ``running`` while no lease exists was
abandoned by a dead process (``workers.reaper`` then retries or fails it). No torch here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

LEASE_PREFIX = "curvedit:worker:lease:"

# Delete the lease only if we still own it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Renew only if we still own it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def lease_key(job_id: str) -> str:
    return f"{LEASE_PREFIX}{job_id}"


def lease_ttl_s(heartbeat_s: int) -> int:
    return max(3, 3 * int(heartbeat_s))


class JobLease:
    """Context manager: acquire (SET NX) and keep renewing a job's lease; release on exit.

    ``acquired`` is False when another live process holds the lease (the caller must not run)."""

    def __init__(self, client: Any, job_id: str, worker: str, ttl_s: int) -> None:
        self.client = client
        self.key = lease_key(job_id)
        self.ttl_ms = int(ttl_s * 1000)
        self.value = json.dumps(
            {"worker": worker, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        )
        self.acquired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def __enter__(self) -> JobLease:
        self.acquired = bool(self.client.set(self.key, self.value, nx=True, px=self.ttl_ms))
        if self.acquired:
            self._thread = threading.Thread(target=self._loop, name=f"lease-{self.key}", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            with contextlib.suppress(Exception):  # a missed renewal is retried; Redis may blip
                self._renew(keys=[self.key], args=[self.value, self.ttl_ms])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.acquired:
            with contextlib.suppress(Exception):  # the lease then simply expires
                self._release(keys=[self.key], args=[self.value])


def lease_holder(client: Any, job_id: str) -> dict[str, Any] | None:
    raw = client.get(lease_key(job_id))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {}
