"""``RedisReporter``: the pipeline's ``Reporter`` (workers/pipeline/reporting.py) backed by the
job record in Redis. Used by the RQ job function; no torch, no import of ``workers``.

Progress writes and cancel checks are rate-limited (``min_interval_s``) so a fast batch loop
does not turn into a Redis round-trip per batch; a progress of 1.0 is always written.
"""

from __future__ import annotations

import time
from typing import Any

from contract.store.jobs import JobStore


class RedisReporter:
    """Reports one job's stages, progress and events into its Redis record."""

    def __init__(self, store: JobStore, job_id: str, *, min_interval_s: float = 0.5) -> None:
        self.store = store
        self.job_id = job_id
        self.min_interval_s = min_interval_s
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def stage(self, name: str, *, cached: bool = False) -> None:
        self.store.set_stage(self.job_id, name, cached=cached)
        self._last_progress = 0.0

    def progress(self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < self.min_interval_s:
            return
        self._last_progress = now
        self.store.set_progress(self.job_id, fraction, tokens_done=tokens_done, tokens_total=tokens_total)

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.store.append_event(self.job_id, level, message, data)

    def cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check < self.min_interval_s:
            return False
        self._last_cancel_check = now
        self._cancelled = self.store.cancel_requested(self.job_id)
        return self._cancelled
