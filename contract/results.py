"""Typed job results and job records: what the worker stores, the API returns and the CLI renders.

``JobResult`` is what a succeeded job's pipeline produced (``workers/pipeline/run.py`` builds it):
one ``SweepPoint`` per ``keep_mass`` (per-target ``LayerReport``s, ``Metrics``, before/after
``ComparisonRow``s, artifact paths), the baseline metrics, cache hits, stage timings, targets,
fingerprints and the output location. ``JobRecord`` is the stored job (``contract/store/jobs.py``)
and the API's response body; ``JobEvent`` one entry of its event log.

Extension points: results are ``extra="allow"`` so a stage can add a field before it has a model
here; add the model when the field settles (``search`` is typed by ``contract/search.py``). Metric
names and how the CLI labels them are in ``METRIC_LABELS``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from contract.search import SearchResult

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
EventLevel = Literal["debug", "info", "warning", "error"]

# Flattened metric name -> (label, lower is better). Order = the CLI table's row order.
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "recitation.strict_rate": ("recitation (strict)", True),
    "recitation.loose_rate": ("recitation (loose)", True),
    "recitation.mean_normalized_distance": ("recitation distance", False),
    "perplexity.perplexity": ("perplexity", True),
    "perplexity.mean_nll": ("mean NLL", True),
    "agreement.ndcg": ("agreement nDCG@k", False),
    "agreement.top1_agreement": ("agreement top-1", False),
    "agreement.topk_overlap": ("agreement top-k overlap", False),
    "classification.memorized_accuracy": ("memorised-label accuracy", True),
    "classification.heldout_accuracy": ("held-out accuracy", False),
}
# Fields the metric reports carry that are settings or raw sums, not outcomes (no table row).
METRIC_SETTINGS: frozenset[str] = frozenset(
    {
        "prefix_tokens",
        "suffix_tokens",
        "loose_threshold",
        "seq_len",
        "k",
        "n",
        "tokens",
        "total_nll",
        "strict_count",
        "loose_count",
        "sequences",
        "positions",
        "memorized_images",
        "heldout_images",
        "seconds",
    }
)


class _Open(BaseModel):
    """Result models accept fields they do not name yet (see the module docstring) and serialise
    only the fields that were given, so a stored result reads back exactly as it was written."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # no return annotation: the serialisation JSON schema stays the model's own
        data = handler(self)
        given = self.model_fields_set | set(self.model_extra or {})
        return {k: v for k, v in data.items() if k in given} if isinstance(data, dict) else data


class RecitationMetrics(_Open):
    strict_rate: float | None = Field(default=None, description="Share of prefixes whose suffix is recited exactly.")
    loose_rate: float | None = Field(default=None, description="Share recited within the loose distance threshold.")
    mean_normalized_distance: float | None = None
    n: int = 0


class PerplexityMetrics(_Open):
    perplexity: float | None = None
    mean_nll: float | None = None
    tokens: int = 0


class AgreementMetrics(_Open):
    ndcg: float | None = Field(default=None, description="Mean nDCG@k of the edited vs the original ranking.")
    k: int | None = None
    top1_agreement: float | None = None
    topk_overlap: float | None = None


class ClassificationMetrics(_Open):
    memorized_accuracy: float | None = Field(
        default=None, description="Share of the memorised set predicted as its (memorised) label."
    )
    heldout_accuracy: float | None = Field(default=None, description="Share of the held-out set predicted correctly.")
    memorized_images: int = 0
    heldout_images: int = 0


class Metrics(_Open):
    """What the evaluation measured on one model (each part present when asked for)."""

    recitation: RecitationMetrics | None = None
    perplexity: PerplexityMetrics | None = None
    agreement: AgreementMetrics | None = None
    classification: ClassificationMetrics | None = None


class ComparisonRow(_Open):
    """One metric before and after the edit."""

    metric: str
    before: float | None = None
    after: float | None = None
    abs_change: float | None = None
    rel_change: float | None = None


class LayerReport(_Open):
    """What the edit did to one target (``workers/curvature/edit.py``)."""

    name: str
    layer: int | None = None
    role: str | None = None
    shape: list[int] = Field(default_factory=list)
    keep_mass: float
    kept_pairs: int = 0
    total_pairs: int = 0
    kept_mass_fraction: float | None = None
    rank_out: int | None = None
    rank_in: int | None = None
    relative_change: float | None = None


class SweepPoint(_Open):
    """One ``keep_mass`` of the sweep: the edit, its metrics and where its artifacts are."""

    keep_mass: float
    layers: list[LayerReport] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)
    comparison: list[ComparisonRow] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict, description="dir, relative_dir and file paths.")


class StageCache(_Open):
    hits: int = 0
    misses: int = 0


class TargetInfo(_Open):
    name: str
    layer: int | None = None
    role: str | None = None
    shape: list[int] = Field(default_factory=list)


class OutputInfo(_Open):
    dir: str
    relative_dir: str
    sweep: bool = Field(default=False, description="One sub-directory per keep_mass (rho-<value>).")


class JobResult(_Open):
    """A succeeded job's result (``result`` of the job record). With MLflow configured the worker adds
    ``mlflow`` (``{run_id, experiment_id, tracking_uri, model_uri?, model_version?}`` or ``{error,
    attempts}``, ``workers/tracking/mlflow_run.py``) as an extra field."""

    results: list[SweepPoint] = Field(default_factory=list)
    baseline: Metrics = Field(default_factory=Metrics, description="Metrics of the unedited model.")
    cache: dict[str, StageCache] = Field(default_factory=dict, description="Factor-cache hits per stage.")
    cached_stages: dict[str, bool] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage, and 'total'.")
    tokens: int | None = Field(default=None, description="Calibration tokens the factors were collected on.")
    targets: list[TargetInfo] = Field(default_factory=list)
    fingerprints: dict[str, str] = Field(default_factory=dict)
    output: OutputInfo | None = None
    search: SearchResult | None = Field(default=None, description="Set for goal-directed jobs (spec.objective).")

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the record (fields never given are left out)."""
        return self.model_dump(mode="json")


# --- the job record ----------------------------------------------------------------------------
class StageInfo(BaseModel):
    status: Literal["running", "succeeded", "failed", "cancelled"]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cached: bool = Field(default=False, description="Served from the factor cache.")


class Progress(BaseModel):
    fraction: float = Field(default=0.0, description="Progress of the current stage in [0, 1].")
    tokens_done: int | None = None
    tokens_total: int | None = None
    eta_s: float | None = Field(default=None, description="Estimated seconds left in the current stage.")


class JobError(BaseModel):
    code: str = Field(description="A job error code (contract/errors.py).")
    message: str


class JobRecord(BaseModel):
    """One edit job as stored and as returned by ``GET /v1/edit-jobs/{id}``."""

    id: str
    owner: str
    status: JobStatus
    stage: str | None = None
    stages: dict[str, StageInfo] = Field(default_factory=dict)
    progress: Progress = Field(default_factory=Progress)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    spec: dict[str, Any] = Field(description="The resolved job spec.")
    result: JobResult | None = Field(
        default=None, description="Set on success: metrics, per-sweep-point results, artifact locations."
    )
    error: JobError | None = Field(default=None, description="Set on failure only.")
    estimate: dict[str, Any] | None = Field(
        default=None,
        description="Preflight at submission (contract.preflight): peak_gb per device with its memory terms, "
        "seconds at the configured device throughput, and whether it fits the worker memory.",
    )
    cancel_requested: bool = False
    worker: str | None = None
    attempts: int = 0
    last_event_seq: int = Field(default=0, description="seq of the newest event (see /events?after=).")


class JobEvent(BaseModel):
    """One entry of a job's event log."""

    seq: int
    time: datetime
    level: EventLevel
    message: str
    data: dict[str, Any] | None = None
