"""Prometheus metrics for ``/metrics``, read from Redis at scrape time so every gateway replica
reports the same numbers and nothing is lost when one restarts.

=================================================  ===================================================
``curvedit_up{component="redis"}``                 1 if Redis answered this scrape
``curvedit_jobs{status}``                          jobs currently in each status
``curvedit_queue_depth``                           RQ jobs waiting on the queue
``curvedit_queue_started`` / ``_failed``           RQ started / failed registries
``curvedit_workers_live``                          workers with a live heartbeat on the queue
``curvedit_stage_duration_seconds{stage,cached}``  histogram of finished stages (from the job store)
``curvedit_stage_cache_hits_total{stage}``         stages served from the factor cache
``curvedit_factor_cache_entries`` / ``_bytes``     size of the Redis factor cache
``curvedit_http_requests_total{method,route,status}`` requests served by this process
=================================================  ===================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from contract.settings import Settings
from contract.store.jobs import JobStore
from contract.store.queue import live_workers, queue_stats
from service.store.factors import cache_totals

log = logging.getLogger(__name__)


class RedisStateCollector(Collector):
    def __init__(self, get_redis: Callable[[], redis.Redis | None], settings: Settings) -> None:
        self.get_redis = get_redis
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("curvedit_up", "1 if the component answered this scrape", labels=["component"])
        r = self.get_redis()
        if r is None:
            up.add_metric(["redis"], 0)
            yield up
            return
        try:
            families = list(self._from_redis(r))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            up.add_metric(["redis"], 0)
            yield up
            return
        up.add_metric(["redis"], 1)
        yield up
        yield from families

    def _from_redis(self, r: redis.Redis) -> Iterator[Metric]:
        store = JobStore(r)
        jobs = GaugeMetricFamily("curvedit_jobs", "Edit jobs by status", labels=["status"])
        for status, n in store.count_by_status().items():
            jobs.add_metric([status], n)
        yield jobs
        stats = queue_stats(r, self.settings)
        yield GaugeMetricFamily("curvedit_queue_depth", "RQ jobs waiting on the edit queue", value=stats["queued"])
        yield GaugeMetricFamily("curvedit_queue_started", "RQ jobs in the started registry", value=stats["started"])
        yield GaugeMetricFamily("curvedit_queue_failed", "RQ jobs in the failed registry", value=stats["failed"])
        yield GaugeMetricFamily(
            "curvedit_workers_live", "Workers with a live heartbeat on the queue", value=live_workers(r, self.settings)
        )
        hist = HistogramMetricFamily(
            "curvedit_stage_duration_seconds", "Duration of finished pipeline stages", labels=["stage", "cached"]
        )
        hits = CounterMetricFamily("curvedit_stage_cache_hits", "Stages served from the factor cache", labels=["stage"])
        hit_counts: dict[str, int] = {}
        for (stage, cached), entry in sorted(store.stage_histogram().items()):
            hist.add_metric([stage, str(cached).lower()], entry["buckets"], entry["sum"])
            if cached:
                hit_counts[stage] = hit_counts.get(stage, 0) + entry["count"]
        for stage, n in sorted(hit_counts.items()):
            hits.add_metric([stage], n)
        yield hist
        yield hits
        entries, size = cache_totals(r)
        yield GaugeMetricFamily("curvedit_factor_cache_entries", "Entries in the Redis factor cache", value=entries)
        yield GaugeMetricFamily("curvedit_factor_cache_bytes", "Bytes in the Redis factor cache", value=size)


def build_registry(
    get_redis: Callable[[], redis.Redis | None], settings: Settings
) -> tuple[CollectorRegistry, Counter]:
    """A per-app registry (tests build many apps) with the Redis collector and the request counter."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisStateCollector(get_redis, settings))
    requests = Counter(
        "curvedit_http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry
    )
    return registry, requests
