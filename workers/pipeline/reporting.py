"""How the pipeline tells the outside world what it is doing.

The pipeline only talks to a ``Reporter``; the RQ job wires one that writes to the Redis job
record, the CLI's in-process ``edit`` wires one that draws a progress bar. Keeping this a
protocol keeps Redis out of the pipeline.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from contract.stages import Stage
from workers.curvature.cancellation import JobCancelled

__all__ = ["JobCancelled", "Level", "NullReporter", "Reporter", "Stage"]

Level = Literal["debug", "info", "warning", "error"]


class Reporter(Protocol):
    def stage(self, name: Stage, *, cached: bool = False) -> None:
        """A stage starts (``cached=True``: it is served from the factor cache)."""

    def progress(
        self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None
    ) -> None:
        """Overall progress of the current stage in [0, 1]."""

    def event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        """Append to the job's ordered event log (metrics go in ``data``)."""

    def cancelled(self) -> bool:
        """True once a cancel was requested; the pipeline then raises ``JobCancelled``."""


class NullReporter:
    """Reporter that records events in memory and never cancels (library and test use)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any] | None]] = []
        self.stages: list[tuple[str, bool]] = []

    def stage(self, name: Stage, *, cached: bool = False) -> None:
        self.stages.append((name, cached))

    def progress(
        self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None
    ) -> None:
        return None

    def event(self, level: Level, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data))

    def cancelled(self) -> bool:
        return False
