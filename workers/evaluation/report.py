"""Before/after comparison of evaluation reports, and table rendering for the CLI and README.

``compare`` takes two nested dicts of metrics (for example ``{"recitation": report.to_dict(), ...}``),
flattens every numeric scalar to a dotted name (``recitation.strict_rate``), skips lists (per-example
rows) and non-numbers, and returns one row per metric with ``before``, ``after``, ``abs_change``
(``after - before``) and ``rel_change`` (``abs_change / |before|``; None when before is 0 or either
side is missing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("metric", "before", "after", "abs_change", "rel_change")
# Settings and raw sums that reports carry but that are not outcomes worth a row.
DEFAULT_SKIP = frozenset(
    {
        "prefix_tokens",
        "suffix_tokens",
        "loose_threshold",
        "seq_len",
        "k",
        "total_nll",
        "strict_count",
        "loose_count",
        "sequences",
        "positions",
    }
)


def flatten_metrics(
    metrics: Mapping[str, Any], prefix: str = "", *, skip: frozenset[str] = frozenset()
) -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a.b": value}`` (bools, lists, strings, None and keys in
    ``skip`` are left out; objects with ``to_dict`` are expanded)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name + ".", skip=skip))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value) if isinstance(value, float) else value
        elif hasattr(value, "to_dict"):
            out.update(flatten_metrics(value.to_dict(), name + ".", skip=skip))
    return out


def compare(
    before: Mapping[str, Any], after: Mapping[str, Any], *, skip: frozenset[str] = DEFAULT_SKIP
) -> list[dict[str, Any]]:
    """Side-by-side rows for every metric in either dict (order: before's, then after-only ones).
    Keys named in ``skip`` (by default the reports' settings such as ``prefix_tokens``) are left out."""
    b = flatten_metrics(before, skip=skip)
    a = flatten_metrics(after, skip=skip)
    names = list(b) + [n for n in a if n not in b]
    rows = []
    for name in names:
        vb, va = b.get(name), a.get(name)
        abs_change = None if vb is None or va is None else va - vb
        rel_change = None
        if abs_change is not None and vb not in (0, None) and math.isfinite(vb):
            rel_change = abs_change / abs(vb)
        rows.append({"metric": name, "before": vb, "after": va, "abs_change": abs_change, "rel_change": rel_change})
    return rows


def _fmt(value: Any, column: str) -> str:
    if value is None:
        return "–"
    if column == "rel_change":
        return f"{value * 100:+.1f}%"
    if isinstance(value, int):
        return f"{value:+d}" if column == "abs_change" else str(value)
    if column == "abs_change":
        return f"{value:+.4g}"
    return f"{value:.4g}"


def render_table(rows: Sequence[Mapping[str, Any]], *, fmt: str = "markdown") -> str:
    """Render ``compare`` rows as a Markdown table (``fmt="markdown"``) or aligned plain text
    (``fmt="text"``)."""
    if fmt not in ("markdown", "text"):
        raise ValueError("fmt must be 'markdown' or 'text'")
    cells = [[_fmt(r.get(c), c) if c != "metric" else str(r["metric"]) for c in COLUMNS] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in cells])
