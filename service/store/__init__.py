"""Redis-backed records shared by the gateway and the workers (no torch here)."""

from service.store.jobs import TERMINAL_STATUSES, JobStore, new_job_id
from service.store.reporter import RedisReporter

__all__ = ["TERMINAL_STATUSES", "JobStore", "RedisReporter", "new_job_id"]
