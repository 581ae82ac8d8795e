"""``JobContext``: what every stage of one job can see (spec, settings, reporter, cache, fanout)
and ``StageClock``, which reports each stage start and records its wall time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from contract.settings import Settings
from contract.spec import EditJobSpec
from contract.stages import Stage
from workers.cache import FactorCache
from workers.pipeline.curvature_stage import ShardFanout
from workers.pipeline.reporting import JobCancelled, Reporter


class StageClock:
    """Stage bookkeeping: reports each stage and records its wall time."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.timings: dict[str, float] = {}
        self.cached: dict[str, bool] = {}
        self._current: tuple[str, float] | None = None

    def stage(self, name: Stage, cached: bool = False) -> None:
        self.close()
        self.reporter.stage(name, cached=cached)
        self.cached[name] = cached
        self._current = (name, time.perf_counter())

    def close(self) -> None:
        if self._current is not None:
            name, t0 = self._current
            self.timings[name] = round(time.perf_counter() - t0, 4)
            self._current = None


@dataclass
class JobContext:
    """One job's fixed inputs, shared by its stages."""

    spec: EditJobSpec
    settings: Settings
    job_id: str
    reporter: Reporter
    cache: FactorCache | None
    fanout: ShardFanout | None = None
    clock: StageClock = field(init=False)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.clock = StageClock(self.reporter)

    def check_cancel(self, where: str) -> None:
        if self.reporter.cancelled():
            raise JobCancelled(f"cancelled during {where}")
