"""Rich rendering for the CLI: the live per-stage progress display, job summaries, the before/after
metrics table and generic item tables. A job's result is read as ``contract.results.JobResult``
(metric names and labels from ``contract.results``, stage names from ``contract.stages``); the
record's other fields are rendered as far as they are present."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from contract.results import METRIC_LABELS, METRIC_SETTINGS, JobResult
from contract.stages import STAGES


# --- progress ---------------------------------------------------------------------------------
def progress_fields(record: Mapping[str, Any]) -> tuple[float | None, int | None, int | None, float | None]:
    """(fraction, tokens_done, tokens_total, eta_s) from a job record's ``progress``."""
    prog = record.get("progress")
    if isinstance(prog, int | float):
        return float(prog), None, None, None
    if not isinstance(prog, Mapping):
        return None, None, None, None

    def num(*keys: str) -> Any:
        for k in keys:
            if isinstance(prog.get(k), int | float):
                return prog[k]
        return None

    return num("fraction", "stage_fraction"), num("tokens_done"), num("tokens_total"), num("eta_s", "eta_seconds")


def cached_stages(record: Mapping[str, Any]) -> set[str]:
    """Stages served from the factor cache (``stages.<name>.cached`` or a ``cache_hits`` map/list)."""
    out: set[str] = set()
    stages = record.get("stages")
    if isinstance(stages, Mapping):
        out |= {str(k) for k, v in stages.items() if isinstance(v, Mapping) and v.get("cached")}
    hits = record.get("cache_hits") or {}
    if isinstance(hits, Mapping):
        out |= {str(k) for k, v in hits.items() if v}
    elif isinstance(hits, list):
        out |= {str(h) for h in hits}
    return out


class JobProgress:
    """Live display of one job: one bar per pipeline stage, filled as the job moves on.

    Feed it job records (``update``) or pipeline calls (``stage`` / ``advance`` from an in-process
    Reporter); use it as a context manager."""

    def __init__(self, console: Console | None = None, title: str = "") -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<27}"),
            BarColumn(bar_width=20),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self.title = title
        self.tasks: dict[str, TaskID] = {}
        self.current: str | None = None
        self.status_task: TaskID | None = None
        self.token_info: dict[str, str] = {}
        self.token_totals: dict[str, int] = {}

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _label(self, name: str, cached: bool) -> str:
        return f"{name}{' (cache hit)' if cached else ''}"

    def stage(self, name: str, cached: bool = False) -> None:
        if name == self.current:
            if cached:
                self.progress.update(self.tasks[name], description=self._label(name, True))
            return
        if self.current is not None:
            self._finish(self.current)
        if self.status_task is not None:
            self.progress.update(self.status_task, visible=False)
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(self._label(name, cached), total=1.0, info="")
        self.current = name

    def _finish(self, name: str) -> None:
        """Mark a stage done: full bar, the clock stopped, no stale ETA."""
        task_id = self.tasks[name]
        total = self.token_totals.get(name)
        info = f"{total:,}/{total:,} tok" if total else self.token_info.get(name, "")
        self.progress.update(task_id, completed=1.0, info=info)
        self.progress.stop_task(task_id)

    def advance(
        self,
        fraction: float | None,
        tokens_done: int | None = None,
        tokens_total: int | None = None,
        eta_s: float | None = None,
    ) -> None:
        if self.current is None:
            return
        info = []
        if tokens_done is not None:
            info.append(f"{tokens_done:,}" + (f"/{tokens_total:,} tok" if tokens_total else " tok"))
            self.token_info[self.current] = info[0]
            if tokens_total:
                self.token_totals[self.current] = int(tokens_total)
        if eta_s is not None and eta_s > 0:
            info.append(f"ETA {eta_s:.0f}s")
        kwargs: dict[str, Any] = {"info": "  ".join(info)}
        if fraction is not None:
            kwargs["completed"] = max(0.0, min(1.0, float(fraction)))
        self.progress.update(self.tasks[self.current], **kwargs)

    def waiting(self, status: str) -> None:
        if self.current is None:
            if self.status_task is None:
                self.status_task = self.progress.add_task(status, total=None, info="")
            else:
                self.progress.update(self.status_task, description=status)

    def update(self, record: Mapping[str, Any]) -> None:
        """Follow a job record from the gateway."""
        status = str(record.get("status", ""))
        stage = record.get("stage")
        cached = cached_stages(record)
        if stage:
            # stages that started and ended between two polls still get a (full) bar
            if stage in STAGES and self.current in STAGES:
                for skipped in STAGES[STAGES.index(self.current) + 1 : STAGES.index(str(stage))]:
                    self.stage(skipped, skipped in cached)
            self.stage(str(stage), str(stage) in cached)
            self.advance(*progress_fields(record))
        else:
            self.waiting(status or "queued")
        if status in ("succeeded", "failed", "cancelled") and self.current is not None:
            if status == "succeeded":
                self._finish(self.current)
            else:
                self.progress.update(self.tasks[self.current], description=f"{self.current} ({status})")
                self.progress.stop_task(self.tasks[self.current])


# --- tables ----------------------------------------------------------------------------------------
def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Numeric leaves as ``{"a.b": value}``, without settings/raw sums (``METRIC_SETTINGS``)."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            if str(k) not in METRIC_SETTINGS and str(k) != "rows":
                out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out[prefix.rstrip(".")] = data
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def job_result(record: Mapping[str, Any]) -> JobResult | None:
    """The record's ``result`` as a ``JobResult`` (None: no result, or not one)."""
    raw = record.get("result")
    if not isinstance(raw, Mapping):
        return None
    try:
        return JobResult.model_validate(raw)
    except ValidationError:
        return None


def sweep_results(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-keep_mass results ``[{keep_mass, before, after, artifacts, k}]`` of a final job record:
    each sweep point's ``comparison`` rows, or its metrics against the baseline."""
    result = job_result(record)
    if result is None:
        return []
    baseline = flatten(result.baseline.model_dump(exclude_none=True))
    out = []
    for point in result.results:
        if point.comparison:
            rows = [r for r in point.comparison if r.metric.split(".")[-1] not in METRIC_SETTINGS]
            before = {r.metric: r.before for r in rows}
            after = {r.metric: r.after for r in rows}
        else:
            before, after = baseline, flatten(point.metrics.model_dump(exclude_none=True))
            if not before and not after:
                continue
        agreement = point.metrics.agreement
        out.append(
            {
                "keep_mass": point.keep_mass,
                "before": before,
                "after": after,
                "artifacts": point.artifacts or None,
                "k": agreement.k if agreement is not None else None,
            }
        )
    return out


def job_artifacts(record: Mapping[str, Any]) -> Any:
    result = job_result(record)
    if result is not None and result.output is not None:
        return result.output.dir
    return None


def metrics_table(before: Mapping[str, Any], after: Mapping[str, Any], title: str = "", k: int | None = None) -> Table:
    table = Table(title=title or None, title_justify="left")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    table.add_column("rel. change", justify="right")
    present = dict.fromkeys([*before.keys(), *after.keys()])
    keys = [k for k in METRIC_LABELS if k in present] + [k for k in present if k not in METRIC_LABELS]
    for key in keys:
        b, a = before.get(key), after.get(key)
        label, lower_better = METRIC_LABELS.get(key.lower(), (key, True))
        if k is not None:
            label = label.replace("@k", f"@{k}").replace("top-k", f"top-{k}")
        if isinstance(b, int | float) and isinstance(a, int | float):
            diff = a - b
            rel = f"{diff / b * 100:+.1f}%" if b else "n/a"
            good = (diff < 0) == lower_better
            colour = "green" if good and diff != 0 else ("red" if diff != 0 else "")
            change = f"[{colour}]{diff:+.4f}[/]" if colour else f"{diff:+.4f}"
            table.add_row(label, _fmt(b), _fmt(a), change, rel)
        elif b is None and key.startswith("agreement.") and isinstance(a, int | float):
            table.add_row(label, "[dim]1 (ref)[/]", _fmt(a), f"{a - 1:+.4f}", f"{(a - 1) * 100:+.1f}%")
        else:
            table.add_row(label, _fmt(b) if b is not None else "-", _fmt(a) if a is not None else "-", "", "")
    return table


def print_results(console: Console, record: Mapping[str, Any]) -> None:
    """The before/after table of every sweep point, and where the artifacts are."""
    results = sweep_results(record)
    if not results:
        console.print("[dim]no evaluation metrics in this job (add an 'evaluation' section to the spec)[/]")
    for res in results:
        km = res["keep_mass"]
        title = f"keep_mass = {km}" if km is not None else "before / after the edit"
        console.print(metrics_table(res["before"], res["after"], title, k=res.get("k")))
        if res["artifacts"]:
            where = format_artifacts(res["artifacts"])
            console.print(f"[bold]edited model:[/] {where}", highlight=False, soft_wrap=True)
            console.print("  (Hugging Face model directory + delta.safetensors + manifest.json)", style="dim")
    timings = stage_timings(record)
    if timings:
        console.print(f"[dim]stage times: {timings}[/]", highlight=False, soft_wrap=True)
    if not any(r["artifacts"] for r in results):
        art = job_artifacts(record)
        if art:
            console.print(f"[bold]edited model:[/] {format_artifacts(art)}", highlight=False, soft_wrap=True)


def stage_timings(record: Mapping[str, Any]) -> str:
    """``load_model 3.1s, collect_factors 0.2s (cached), ...`` from the result's timings."""
    result = job_result(record)
    if result is None or not result.timings:
        return ""
    cached = cached_stages(record) | {name for name, hit in result.cached_stages.items() if hit}
    return ", ".join(
        f"{name} {sec:.1f}s" + (" (cached)" if name in cached else "") for name, sec in result.timings.items()
    )


def format_artifacts(art: Any) -> str:
    """The artifact directory (a Hugging Face model directory plus delta and manifest)."""
    if isinstance(art, str):
        return art
    if isinstance(art, Mapping):
        for key in ("dir", "model_dir", "model", "path", "output_dir"):
            if isinstance(art.get(key), str):
                return str(art[key])
        return json.dumps(art)
    if isinstance(art, list):
        return ", ".join(format_artifacts(a) for a in art)
    return str(art)


def _ts(value: Any) -> str:
    """Epoch seconds or an ISO 8601 string as ``YYYY-MM-DD HH:MM:SS``."""
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, str) and len(value) >= 19 and value[10] == "T":
        return f"{value[:10]} {value[11:19]}{' UTC' if value.endswith('Z') else ''}"
    return str(value) if value is not None else "-"


def job_table(record: Mapping[str, Any]) -> Table:
    """Key/value summary of one job."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", escape(str(record.get("id", "?"))))
    table.add_row("status", escape(str(record.get("status", "?"))))
    if record.get("stage"):
        table.add_row("stage", escape(str(record["stage"])))
    frac, done, total, eta = progress_fields(record)
    if frac is not None:
        extra = f"  {done:,}/{total:,} tokens" if done is not None and total else ""
        extra += f"  ETA {eta:.0f}s" if eta else ""
        table.add_row("progress", f"{frac * 100:.1f}%{extra}")
    for key in ("created_at", "started_at", "finished_at"):
        if record.get(key) is not None:
            table.add_row(key, _ts(record[key]))
    cached = cached_stages(record)
    if cached:
        table.add_row("cache hits", ", ".join(sorted(cached)))
    err = record.get("error")
    if err:
        text = f"{err.get('code')}: {err.get('message')}" if isinstance(err, Mapping) else str(err)
        table.add_row("error", f"[red]{escape(text)}[/]")
    if job_artifacts(record):
        table.add_row("artifacts", escape(format_artifacts(job_artifacts(record))))
    return table


def items_table(items: Iterable[Mapping[str, Any]], columns: list[str], title: str = "") -> Table:
    items = list(items)
    table = Table(title=title or None, title_justify="left")
    for col in columns:
        if col in ("id", "key"):  # must stay copy-pasteable
            width = max([len(str(i.get(col, ""))) for i in items] + [len(col)])
            table.add_column(col, no_wrap=True, min_width=width)
        else:
            table.add_column(col)
    for item in items:
        row = []
        for col in columns:
            value = item.get(col)
            if col.endswith("_at"):
                row.append(_ts(value))
            elif isinstance(value, Mapping | list):
                row.append(json.dumps(value)[:60])
            else:
                row.append("" if value is None else str(value))
        table.add_row(*(escape(cell) for cell in row))
    return table
