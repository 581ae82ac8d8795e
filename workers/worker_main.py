"""Worker process entry point: ``python -m workers.worker_main [--burst] [--name NAME]``.

Starts a ``CurveditWorker`` (spawn-based, JSON serializer) on ``settings.queue_name``. This
process never imports torch; each job runs in a spawned work horse.
"""

from __future__ import annotations

import argparse
import logging

import redis
from rq.serializers import JSONSerializer

from service.config import Settings, get_settings
from service.queue import get_queue
from workers.lease import lease_ttl_s
from workers.worker import CurveditWorker


def build_worker(settings: Settings, *, name: str | None = None) -> CurveditWorker:
    if not settings.redis_url:
        raise SystemExit("the worker needs CURVEDIT_REDIS_URL (or run it through `curvedit up`)")
    client = redis.Redis.from_url(settings.redis_url)
    queue = get_queue(client, settings)
    ttl = max(16, lease_ttl_s(settings.worker_heartbeat_s))
    worker = CurveditWorker(
        [queue],
        connection=client,
        name=name,
        serializer=JSONSerializer,
        worker_ttl=ttl,
        job_monitoring_interval=max(1, min(30, settings.worker_heartbeat_s)),
        maintenance_interval=settings.worker_heartbeat_s,
    )
    worker.curvedit_settings = settings
    return worker


def run_worker(settings: Settings | None = None, burst: bool = False, *, name: str | None = None) -> bool:
    """Run the worker loop (returns when ``burst`` and the queue is empty, or on SIGTERM)."""
    settings = settings or get_settings()
    worker = build_worker(settings, name=name)
    return worker.work(burst=burst, logging_level="INFO", with_scheduler=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.worker_main", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(burst=args.burst, name=args.name)


if __name__ == "__main__":
    main()
