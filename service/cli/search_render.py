"""What the CLI prints about a goal-directed job (``objective`` in the spec): the chosen edit, how
many trials the search spent, whether the objective was met, and where ``report.md`` and the
frontier plot are. Reads the job record only (``result.search``, ``result.output``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

REPORT_NAME = "report.md"
FRONTIER_NAME = "frontier.png"


def search_of(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    result = record.get("result")
    if isinstance(result, Mapping) and isinstance(result.get("search"), Mapping):
        return result["search"]
    return None


def describe_trial(trial: Mapping[str, Any]) -> str:
    m = trial.get("metrics") or {}
    layers = ",".join(str(x) for x in trial.get("layers") or [])
    roles = "+".join(trial.get("projections") or [])
    inc = m.get("perplexity_increase")
    ppl = f"{inc * 100:+.1f} %" if isinstance(inc, int | float) else "?"
    text = f"layers {layers} ({roles}) at ρ = {float(trial.get('keep_mass', 0.0)):.6g}"
    return f"{text} → strict {m.get('strict_rate', 0.0):.3f}, loose {m.get('loose_rate', 0.0):.3f}, perplexity {ppl}"


def output_dir(record: Mapping[str, Any]) -> str | None:
    result = record.get("result")
    out = result.get("output") if isinstance(result, Mapping) else None
    if isinstance(out, Mapping) and isinstance(out.get("dir"), str):
        return str(out["dir"])
    return None


def print_search(console: Console, record: Mapping[str, Any]) -> None:
    """Chosen edit, trial count, met or not, and the report / frontier paths (when written)."""
    search = search_of(record)
    if search is None:
        return
    trials = search.get("trials") or []
    chosen = search.get("chosen")
    met = bool(search.get("met"))
    console.print(
        f"[bold]goal-directed search:[/] {len(trials)} trial(s) of at most {search.get('max_trials')} "
        f"over {len(search.get('layer_sets') or [])} layer set(s); objective "
        + ("[green]met[/]" if met else "[red]NOT met[/]"),
        highlight=False,
    )
    if isinstance(chosen, Mapping):
        label = "chosen edit" if met else "closest trial"
        console.print(f"[bold]{label}:[/] {describe_trial(chosen)}", highlight=False, soft_wrap=True)
    where = output_dir(record)
    if where is not None and record.get("status") == "succeeded":
        report = Path(where) / REPORT_NAME
        frontier = Path(where) / FRONTIER_NAME
        console.print(f"[bold]report:[/] {report}", highlight=False, soft_wrap=True)
        console.print(f"[bold]frontier plot:[/] {frontier}", highlight=False, soft_wrap=True)
