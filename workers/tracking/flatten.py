"""Flatten a job's nested spec and metrics into MLflow's flat ``name -> value`` maps.

Params: every leaf of the resolved spec as ``a.b.c -> str`` (lists and objects inside lists as
compact JSON, ``None`` left out), each value cut to ``MAX_PARAM_CHARS`` so inline texts cannot
exceed the tracking server's limit. Metrics: every finite number (and bool, as 0/1) of a metrics
dict as ``a.b -> float``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MAX_PARAM_CHARS = 500


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name + "."))
        elif value is None:
            continue
        else:
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
            if len(text) > MAX_PARAM_CHARS:
                text = text[: MAX_PARAM_CHARS - 24] + f"...({len(text)} chars)"
            out[name] = text
    return out


def flatten_metrics(tree: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name + "."))
        elif isinstance(value, (int, float)) and math.isfinite(float(value)):  # bool too, as 0/1
            out[name] = float(value)
    return out
