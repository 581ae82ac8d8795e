"""Pre-emption: a worker asked to shut down stops its running job after the current batch, and the
job goes back to the queue instead of failing or holding the shutdown for hours.

The worker's parent process (``CurveditWorker``, on SIGTERM while busy) sets
``curvedit:job:<id>:preempt``; the job's reporter is wrapped in ``PreemptGuard``, whose
``cancelled()`` — called by the pipeline between batches and stages — raises ``JobPreempted`` once
the flag is set. The pipeline unwinds as it does for a cancel (the staging directory is removed,
nothing half-written stays), and ``run_edit_job`` requeues the job without counting the attempt.
No torch here.
"""

from __future__ import annotations

import time
from typing import Any

from contract import keys

PREEMPT_TTL_S = 3600


class JobPreempted(Exception):  # noqa: N818 - a signal to unwind, like JobCancelled
    """The worker running the job is shutting down; the job must stop and be requeued."""


def request_preempt(client: Any, job_id: str) -> None:
    """Ask the pipeline of job ``job_id`` to stop after its current batch."""
    client.set(keys.job_preempt(job_id), "1", ex=PREEMPT_TTL_S)


def clear_preempt(client: Any, job_id: str) -> None:
    client.delete(keys.job_preempt(job_id))


class PreemptGuard:
    """A ``Reporter`` wrapper whose ``cancelled()`` raises ``JobPreempted`` once the job's pre-empt
    flag is set (checked at most every ``min_interval_s``)."""

    def __init__(self, inner: Any, client: Any, job_id: str, *, min_interval_s: float = 0.5) -> None:
        self.inner = inner
        self.client = client
        self.job_id = job_id
        self.min_interval_s = min_interval_s
        self._last_check = 0.0

    def stage(self, name: Any, *, cached: bool = False) -> None:
        self.inner.stage(name, cached=cached)

    def progress(self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None) -> None:
        self.inner.progress(fraction, tokens_done=tokens_done, tokens_total=tokens_total)

    def event(self, level: Any, message: str, data: dict[str, Any] | None = None) -> None:
        self.inner.event(level, message, data)

    def cancelled(self) -> bool:
        now = time.monotonic()
        if now - self._last_check >= self.min_interval_s:
            self._last_check = now
            if self.client.exists(keys.job_preempt(self.job_id)):
                raise JobPreempted("the worker is shutting down")
        return bool(self.inner.cancelled())
