"""Typed results of a goal-directed edit (``objective`` in the job spec): one ``Trial`` per
evaluated edit, and the ``SearchResult`` stored under ``result.search`` and in the manifest.

Pure pydantic, no torch: the gateway, the CLI and the worker all read these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TrialStage = Literal["screen", "confirm"]


class TrialMetrics(BaseModel):
    """What one trial measured, relative to the unedited model on the same data."""

    model_config = ConfigDict(extra="forbid")

    strict_rate: float = Field(description="Strict recitation rate on the forget set (or its screening subset).")
    loose_rate: float = Field(description="Loose recitation rate on the forget set.")
    perplexity: float | None = Field(default=None, description="Held-out perplexity after the edit.")
    perplexity_increase: float = Field(description="Relative held-out perplexity increase (0.05 = +5 %).")
    ndcg: float | None = Field(default=None, description="nDCG@10 against the unedited model (when asked).")
    forget_examples: int = Field(default=0, description="Forget pairs the rates are over.")
    retain_tokens: int = Field(default=0, description="Held-out tokens the perplexity is over.")


class Trial(BaseModel):
    """One evaluated edit: which layers, which projections, which rho, what it did."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="1-based evaluation number, in the order run.")
    layers: list[int]
    projections: list[str]
    keep_mass: float
    stage: TrialStage = Field(description="'screen': subsampled sets; 'confirm': the full forget/retain sets.")
    metrics: TrialMetrics
    forget_met: bool
    retain_met: bool
    feasible: bool = Field(description="forget_met and retain_met.")


class SearchResult(BaseModel):
    """Outcome of the search: every trial, the chosen one and whether the targets were met."""

    model_config = ConfigDict(extra="forbid")

    trials: list[Trial]
    chosen: Trial | None = Field(
        description="The confirmed feasible trial with the least retain damage (ties: fewer layers); when no "
        "trial met the targets, the closest one (exported only with output.best_effort)."
    )
    met: bool = Field(description="True when the chosen trial meets every target on the full sets.")
    layer_sets: list[list[int]] = Field(description="Candidate layer sets searched.")
    max_trials: int
    evaluations: int = Field(description="Trials run (len(trials)).")
    baseline: TrialMetrics | None = Field(
        default=None, description="The unedited model on the full forget / retain sets (perplexity_increase 0)."
    )
