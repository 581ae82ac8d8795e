"""``CurveditWorker``: RQ's ``SpawnWorker`` (each job runs in a freshly spawned interpreter, so no
CUDA state is ever forked) plus dead-worker recovery.

- every maintenance pass (at start-up, then every ``settings.worker_heartbeat_s`` while idle)
  runs ``reap_lost_jobs``: ``running`` records whose lease expired are retried or failed;
- when a work horse dies under this worker (``kill -9``, OOM killer), its job is recovered at
  once instead of waiting for the lease to expire;
- on SIGTERM/SIGINT (warm shutdown) it remembers that a stop was asked for (``stop_signalled``,
  which RQ does not record for an idle worker), and when busy it pre-empts its edit job: the job
  stops after its current batch and is requeued (``workers.preempt``), so the shutdown takes
  seconds, not the rest of the job.

Lives in its own module (not ``__main__``) because ``SpawnWorker`` pickles the worker class
for the horse.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.worker import SpawnWorker

from contract.settings import Settings, get_settings
from workers.preempt import request_preempt
from workers.reaper import reap_lost_jobs, record_id_of, recover_job, redeliver_unstarted

log = logging.getLogger(__name__)


class CurveditWorker(SpawnWorker):
    """Spawn-based RQ worker that never leaves a job of a dead horse ``running``."""

    curvedit_settings: Settings | None = None
    stop_signalled: bool = False
    stop_flag: Any = None  # ``workers.worker_main.StopFlag``: a signal that came before work() began

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("work_horse_killed_handler", self._on_horse_killed)
        super().__init__(*args, **kwargs)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stop_flag is not None and self.stop_flag.requested:
            self.stop_signalled = True
            self._stop_requested = True  # RQ's loop checks this before its first dequeue

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        self.stop_signalled = True
        if self.stop_flag is not None:
            self.stop_flag.requested = True
        try:
            job = self.get_current_job()
            job_id = record_id_of(job) if job is not None else None
            if job_id:
                request_preempt(self.connection, job_id)
                self.log.warning("shutting down: job %s stops after its current batch and is requeued", job_id)
        except Exception:  # noqa: BLE001 - a failed pre-empt only means waiting for the job to end
            self.log.exception("pre-empting the running job failed")

    def _settings(self) -> Settings:
        return self.curvedit_settings or get_settings()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        try:
            outcomes = reap_lost_jobs(self.connection, self._settings())
            if outcomes:
                self.log.warning("recovered abandoned jobs: %s", outcomes)
        except Exception:  # noqa: BLE001 - maintenance must never kill the worker
            self.log.exception("reaping lost jobs failed")

    def _on_horse_killed(self, job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
        import os

        job_id = record_id_of(job)
        if not job_id:
            return
        how = f"signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else f"status {ret_val}"
        reason = f"the work horse died ({how})"
        try:
            if recover_job(self.connection, self._settings(), job_id, reason) is None:
                redeliver_unstarted(self.connection, self._settings(), job_id, reason)
        except Exception:  # noqa: BLE001
            self.log.exception("recovering job %s after its horse died failed", job_id)
