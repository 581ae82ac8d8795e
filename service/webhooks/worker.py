"""The webhook delivery worker: ``python -m service.webhooks.worker [--name NAME]``.

One lightweight process (no torch, no fork per job): a thread sweeps the outbox into deliveries
(``outbox.OutboxSweeper``) while the main thread runs an RQ ``SimpleWorker`` on the webhook queue
with RQ's scheduler (which re-queues retries when their back-off has passed). ``curvedit up``
starts one; run more for more throughput. It survives a Redis outage the way the edit workers do:
wait with back-off, then start afresh.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import time

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from contract.logs import configure_logging
from contract.settings import Settings, get_settings
from service.webhooks import delivery
from service.webhooks.outbox import OutboxSweeper
from service.webhooks.queue import get_queue

log = logging.getLogger("curvedit.webhooks")


def sweep_forever(settings: Settings, consumer: str, stop: threading.Event) -> None:
    """Outbox sweep loop (its own Redis connection); keeps going through Redis outages."""
    assert settings.redis_url
    delay = 1.0
    while not stop.is_set():
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
        try:
            sweeper = OutboxSweeper(client, settings, consumer=consumer)
            while not stop.is_set():
                sweeper.sweep(block_ms=500)
                delay = 1.0
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("outbox sweep lost Redis: %s; retrying in %.0f s", exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
        except Exception:  # a bad entry must not stop deliveries; it stays pending and is retried
            log.exception("outbox sweep failed; retrying in %.0f s", delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
        finally:
            client.close()


def stop_requested(worker: SimpleWorker) -> bool:
    """Whether the worker loop ended because of SIGTERM/SIGINT (RQ records when a warm shutdown
    was asked for), as opposed to losing Redis."""
    return bool(getattr(worker, "_stop_requested", False) or getattr(worker, "_shutdown_requested_date", None))


def run(settings: Settings | None = None, *, name: str | None = None) -> None:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise SystemExit("the delivery worker needs CURVEDIT_REDIS_URL (or run it through `curvedit up`)")
    delivery.configure(settings)
    consumer = name or f"webhooks-{socket.gethostname()}"
    stop = threading.Event()
    sweeper = threading.Thread(target=sweep_forever, args=(settings, consumer, stop), name="outbox", daemon=True)
    sweeper.start()
    try:
        while True:
            client = redis.Redis.from_url(settings.redis_url)
            worker = SimpleWorker(
                [get_queue(client, settings)], connection=client, serializer=JSONSerializer, name=name
            )
            try:
                worker.work(with_scheduler=True, logging_level="INFO")
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("delivery worker lost Redis: %s", exc)
            if stop_requested(worker):
                return
            time.sleep(2.0)
    finally:
        stop.set()
        sweeper.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.webhooks.worker", description=__doc__)
    parser.add_argument("--name", default=None, help="worker and outbox consumer name (default: per host)")
    args = parser.parse_args(argv)
    configure_logging(get_settings())  # CURVEDIT_LOG_FORMAT=json: one JSON object per line
    run(name=args.name)


if __name__ == "__main__":
    main()
