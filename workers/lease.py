"""Job leases: proof that some process is alive and running a job.

The job function holds ``contract.keys.worker_lease(job_id)`` while it runs; a daemon thread renews
it every third of its TTL. A job record that says ``running`` while no lease exists was
abandoned by a dead process (``workers.reaper`` then retries or fails it). A process that finds
its lease gone on renewal (it stalled longer than the TTL and the job may already be re-running
elsewhere) is told so through ``lost``; ``LeaseGuard`` then stops the pipeline without touching
the record, which now belongs to the retry. No torch here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

from contract import keys

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
    return keys.worker_lease(job_id)


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
        self.lost = False
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
            try:
                if not self._renew(keys=[self.key], args=[self.value, self.ttl_ms]):
                    self.lost = True  # expired or taken over: someone else may run the job now
                    return
            except Exception:  # noqa: BLE001 - a missed renewal is retried; Redis may blip
                continue

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.acquired:
            with contextlib.suppress(Exception):  # the lease then simply expires
                self._release(keys=[self.key], args=[self.value])


class LeaseLost(Exception):
    """This process no longer holds the job's lease; it must stop and leave the record alone."""


class LeaseGuard:
    """A ``Reporter`` wrapper that raises ``LeaseLost`` on any call once the lease is lost."""

    def __init__(self, inner: Any, lease: JobLease) -> None:
        self.inner = inner
        self.lease = lease

    def _check(self) -> None:
        if self.lease.lost:
            raise LeaseLost(f"lease {self.lease.key} was lost")

    def stage(self, name: Any, *, cached: bool = False) -> None:
        self._check()
        self.inner.stage(name, cached=cached)

    def progress(self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None) -> None:
        self._check()
        self.inner.progress(fraction, tokens_done=tokens_done, tokens_total=tokens_total)

    def event(self, level: Any, message: str, data: dict[str, Any] | None = None) -> None:
        self._check()
        self.inner.event(level, message, data)

    def cancelled(self) -> bool:
        self._check()
        return bool(self.inner.cancelled())


def lease_holder(client: Any, job_id: str) -> dict[str, Any] | None:
    raw = client.get(lease_key(job_id))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {}
