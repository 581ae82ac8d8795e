"""The pipeline's stage names, in run order: what job records, events, metrics and the CLI's
progress display call them. ``STAGES`` is the order a job goes through them."""

from __future__ import annotations

from typing import Literal, get_args

Stage = Literal["load_model", "collect_factors", "eigendecompose", "edit", "evaluate", "export"]
STAGES: tuple[Stage, ...] = get_args(Stage)
