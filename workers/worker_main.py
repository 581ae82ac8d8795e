"""Worker process entry point: ``python -m workers.worker_main [--burst] [--name NAME]``.

Starts a ``CurveditWorker`` (spawn-based, JSON serializer) on ``settings.queue_name``. This
process never imports torch; each job runs in a spawned work horse.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from typing import Any

import redis
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from contract.logs import configure_logging
from contract.roots import RootsOverlap, check_roots
from contract.settings import Settings, get_settings
from contract.store.queue import get_queue
from workers.lease import lease_ttl_s
from workers.worker import CurveditWorker

log = logging.getLogger(__name__)


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


def redis_reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()


class StopFlag:
    """SIGTERM/SIGINT while no RQ loop is running (between two workers, during a back-off wait):
    remembered here, and seen by the next ``CurveditWorker`` before it dequeues anything."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        log.info("got signal %s: stopping", signum)
        self.requested = True

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early once a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def run_worker(
    settings: Settings | None = None, burst: bool = False, *, name: str | None = None, max_backoff_s: float = 30.0
) -> bool:
    """Run the worker loop (returns when ``burst`` and the queue is empty, or on SIGTERM/SIGINT).

    RQ's loop quits when it loses Redis (a restart, a failover); this one then waits for Redis to
    answer again, with exponential back-off, and starts a fresh worker, so a Redis restart needs no
    process supervisor. A job whose horse outlived the outage finishes on its own (it holds the
    job's lease); a job that died with it is recovered by the reaper.

    A stop request ends it at once when idle (RQ's loop ends without recording an idle worker's
    stop, hence ``StopFlag`` and ``CurveditWorker.stop_signalled``); a busy worker pre-empts its job
    (stopped after the current batch, requeued) and then exits."""
    settings = settings or get_settings()
    if not settings.redis_url:
        raise SystemExit("the worker needs CURVEDIT_REDIS_URL (or run it through `curvedit up`)")
    try:
        check_roots(settings)
    except RootsOverlap as exc:
        raise SystemExit(str(exc)) from exc
    stop = StopFlag()
    stop.install()
    delay = 1.0
    result = False
    while not stop.requested:
        worker: CurveditWorker | None = None
        started = time.monotonic()
        try:
            worker = build_worker(settings, name=name)
            worker.stop_flag = stop
            result = bool(worker.work(burst=burst, logging_level="INFO", with_scheduler=False)) or result
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("worker lost Redis: %s", exc)
        except StopRequested:
            stop.requested = True
        finally:
            stop.install()  # RQ's handlers die with its loop; ours take over again
        if burst or stop.requested or (worker is not None and (worker.stop_signalled or worker._stop_requested)):
            break
        if time.monotonic() - started > 60:
            delay = 1.0  # it ran fine for a while: this is a new incident
        while not stop.requested and not redis_reachable(settings.redis_url):
            log.warning("Redis at %s does not answer; retrying in %.0f s", settings.redis_url, delay)
            stop.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
        if stop.requested:
            break
        log.warning("the RQ worker loop ended without a stop request; starting a fresh worker in %.0f s", delay)
        stop.sleep(delay)
        delay = min(delay * 2, max_backoff_s)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.worker_main", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's)")
    args = parser.parse_args(argv)
    configure_logging(get_settings())  # CURVEDIT_LOG_FORMAT=json: one JSON object per line
    run_worker(burst=args.burst, name=args.name)


if __name__ == "__main__":
    main()
