"""``curvedit edit``: the edit pipeline in this process (no gateway, no Redis needed), for notebooks
and batch systems. Progress goes to a live display through a ``Reporter`` implementation.

A CLI plugin: pyproject.toml declares ``register`` in the ``curvedit.cli`` entry-point group and
``service/cli/plugins.py`` calls it. It registers the command only when the worker extra (torch,
transformers) is installed; without it the CLI's stand-in says how to install it. torch is
imported only when the command runs, so ``curvedit --help`` stays fast and torch-free.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.markup import escape

from contract.settings import Settings
from service.cli.context import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, console, err_console, fail
from service.cli.render import JobProgress, print_results
from service.cli.search_render import print_search
from service.cli.specs import build_spec

WORKER_MODULES = ("torch", "transformers", "safetensors")

# Pipeline error codes that mean "fix your spec" (exit 2) rather than "the edit failed" (exit 1).
INPUT_ERRORS = frozenset(
    {
        "model_not_found",
        "remote_code_not_allowed",
        "invalid_path",
        "invalid_target",
        "dataset_not_found",
        "invalid_dataset",
        "output_exists",
    }
)


class ProgressReporter:
    """``workers.pipeline.reporting.Reporter`` that draws on a ``JobProgress`` and keeps the events.

    Ctrl-C sets the cancel flag; the pipeline stops at its next batch boundary."""

    def __init__(self, display: JobProgress, verbose: bool = False) -> None:
        self.display = display
        self.verbose = verbose
        self.events: list[dict[str, Any]] = []
        self.stages: list[tuple[str, bool]] = []
        self._cancel = False
        self._stage_started = 0.0

    def stage(self, name: str, *, cached: bool = False) -> None:
        self.stages.append((name, cached))
        self._stage_started = time.monotonic()
        self.display.stage(name, cached)

    def progress(self, fraction: float, *, tokens_done: int | None = None, tokens_total: int | None = None) -> None:
        eta = None
        if 0 < fraction < 1:
            eta = (time.monotonic() - self._stage_started) * (1 - fraction) / fraction
        self.display.advance(fraction, tokens_done, tokens_total, eta)

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append({"time": time.time(), "level": level, "message": message, "data": data})
        if self.verbose or level in ("warning", "error"):
            colour = {"error": "red", "warning": "yellow"}.get(level, "dim")
            self.display.progress.console.print(f"[{colour}]{level}[/] {escape(message)}", highlight=False)

    def cancelled(self) -> bool:
        return self._cancel

    def request_cancel(self) -> None:
        self._cancel = True


def edit(
    spec: Path | None = typer.Option(None, "--spec", "-s", help="Job spec JSON file (EditJobSpec)."),
    model: str | None = typer.Option(None, help="Model directory under the model root (model.path)."),
    calibration: str | None = typer.Option(
        None, help="Calibration file under the data root (a weighted union of corpora: calibration.sources in --spec)."
    ),
    estimator: str | None = typer.Option(
        None, help="Curvature estimator: 'kfac' (eigenvalue products) or 'ekfac' (eigenvalue-corrected)."
    ),
    layers: str | None = typer.Option(None, help="Comma-separated layer indices."),
    projections: str | None = typer.Option(None, help="Comma-separated roles: gate, up, down."),
    keep_mass: str | None = typer.Option(None, "--keep-mass", help="rho in (0,1], or a sweep '0.5,0.7,0.9'."),
    output: str | None = typer.Option(None, help="Output directory under the output root."),
    cache: str | None = typer.Option(
        None, help="Factor cache: a directory / fsspec URI, 'redis' (needs CURVEDIT_REDIS_URL) or 'off'."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every pipeline event."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of tables."),
) -> None:
    """Run an edit in this process from a spec file and/or flags; prints the before/after table."""
    _, job_spec = build_spec(
        spec,
        model=model,
        calibration=calibration,
        layers=layers,
        projections=projections,
        keep_mass=keep_mass,
        output=output,
        estimator=estimator,
    )
    settings = Settings()
    if cache is not None:
        settings = settings.model_copy(update={"factor_cache": cache})

    from workers.pipeline.run import run_pipeline

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from workers.cache import open_factor_cache
    from workers.pipeline.errors import PipelineError
    from workers.pipeline.reporting import JobCancelled

    job_id = "local-" + time.strftime("%Y%m%d-%H%M%S")
    try:
        factor_cache = open_factor_cache(settings)
    except (OSError, ValueError, ImportError) as exc:
        fail(f"--cache: cannot open the factor cache {settings.factor_cache!r}: {exc}")
    t0 = time.monotonic()
    with JobProgress(console) as display:
        reporter = ProgressReporter(display, verbose=verbose)

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            reporter.request_cancel()
            console.print("[yellow]cancelling at the next batch boundary (Ctrl-C again to abort)[/]")
            signal.signal(signal.SIGINT, signal.default_int_handler)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            result = run_pipeline(job_spec, settings=settings, job_id=job_id, reporter=reporter, cache=factor_cache)
        except JobCancelled:
            err_console.print("edit cancelled")
            raise typer.Exit(EXIT_CANCELLED) from None
        except PipelineError as exc:
            if exc.result is not None:  # objective_not_met: show the trials spent and the closest one
                print_search(console, {"status": "failed", "result": exc.result})
            fail(f"{exc.code}: {exc.message}", EXIT_USAGE if exc.code in INPUT_ERRORS else EXIT_FAILED)
        finally:
            signal.signal(signal.SIGINT, previous)
    elapsed = time.monotonic() - t0
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    record = {"id": job_id, "status": "succeeded", "result": result}
    print_search(console, record)
    print_results(console, record)
    console.print(f"edit finished in {elapsed:.1f} s")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def register(app: typer.Typer) -> bool:
    """Entry point (``curvedit.cli``): add ``edit`` to ``app`` when the worker extra is installed."""
    if not all(_installed(name) for name in WORKER_MODULES):
        return False
    app.command("edit")(edit)
    return True
