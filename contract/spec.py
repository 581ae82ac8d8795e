"""The edit job spec: the one contract shared by the HTTP body, the CLI ``--spec`` file,
the worker's input and the manifest written beside every result.

Pure pydantic, no torch. Every field has a default and a bound; unknown fields are
rejected (``extra="forbid"``) so a typo never silently becomes a default.
Paths in the spec are *relative to configured roots* (see ``contract.settings.Settings``);
confinement is checked by ``contract.paths``, not here, because the roots are deployment
settings rather than part of the job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from contract.families import default_roles
from contract.webhooks.events import DEFAULT_EVENTS, EventName
from contract.webhooks.urls import MAX_URL_CHARS, check_url

Role = Literal["gate", "up", "down"]
FisherType = Literal["sampled", "empirical"]
ModelDType = Literal["float32", "bfloat16", "float16", "auto"]
EigDType = Literal["float32", "float64"]
Estimator = Literal["kfac", "ekfac"]
AccumulationPrecision = Literal["fp32", "tf32", "bf16"]
DEFAULT_ROLES: tuple[Role, ...] = ("gate", "up")

KeepMass = Annotated[
    float,
    Field(gt=0.0, le=1.0, description="Fraction rho in (0, 1] of total curvature mass to keep."),
]

_DATASET_ID = re.compile(r"^ds_[A-Za-z0-9]{8,64}$")
MAX_INLINE_CHARS = 2_000_000


class StrictModel(BaseModel):
    """Base for every spec section: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def _check_relative_path(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise ValueError(f"{field} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL bytes")
    return value


def _check_dataset_id(value: str | None) -> str | None:
    if value is not None and not _DATASET_ID.match(value):
        raise ValueError("dataset_id must look like 'ds_<alphanumeric>' as returned by POST /v1/datasets")
    return value


class ModelSpec(StrictModel):
    """Which model to edit: a local directory under the model root, or a hub id."""

    path: str | None = Field(
        default=None,
        description="Hugging Face model directory, relative to the configured model root.",
    )
    hub_id: str | None = Field(
        default=None,
        description="Hub repository id (e.g. 'allenai/OLMo-2-1124-7B'), resolved through the local "
        "Hugging Face cache; offline mode (HF_HUB_OFFLINE=1) is honoured.",
        max_length=200,
    )
    revision: str = Field(default="main", max_length=200, description="Hub revision (branch, tag or commit).")
    dtype: ModelDType = Field(default="auto", description="dtype the model is loaded in; 'auto' = checkpoint's.")
    trust_remote_code: bool = Field(
        default=False, description="Allowed only when the deployment enables it (CURVEDIT_ALLOW_REMOTE_CODE)."
    )

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str | None) -> str | None:
        return _check_relative_path(v, "model.path")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("exactly one of model.path or model.hub_id must be given")
        return self


class TextSource(StrictModel):
    """A text corpus: an uploaded dataset, a file under the data root, or inline texts."""

    dataset_id: str | None = Field(default=None, description="Id returned by POST /v1/datasets.")
    path: str | None = Field(
        default=None,
        description="File under the configured data root: .txt (one document per blank-line-separated "
        "block) or .jsonl (one object per line with a 'text' field).",
    )
    texts: list[str] | None = Field(default=None, description="Inline documents (small jobs only).")

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str | None) -> str | None:
        return _check_relative_path(v, "path")

    @field_validator("dataset_id")
    @classmethod
    def _dataset_ok(cls, v: str | None) -> str | None:
        return _check_dataset_id(v)

    @field_validator("texts")
    @classmethod
    def _inline_size(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("texts must not be an empty list")
            total = sum(len(t) for t in v)
            if total > MAX_INLINE_CHARS:
                raise ValueError(
                    f"inline texts hold {total} characters, more than {MAX_INLINE_CHARS}; "
                    "upload them with POST /v1/datasets and pass dataset_id instead"
                )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> TextSource:
        given = [n for n in ("dataset_id", "path", "texts") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of dataset_id, path or texts must be given (got {given or 'none'})")
        return self


IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageSource(StrictModel):
    """Labelled images for an image-classification model: a class-folder tree or a ``.npz``."""

    path: str = Field(
        description="Under the configured data root: a folder with one sub-folder per class "
        "(<class>/<image>.png|.jpg|.jpeg|.bmp|.webp; the class is the model's label2id entry of that name, "
        "or that index when the name is an integer), or a .npz holding 'labels' (N,) and either "
        "'pixel_values' (N, C, H, W float, already preprocessed) or 'images' (N, H, W, C uint8, resized "
        "and normalised with the model's image processor). Read without pickle.",
    )
    max_images: int = Field(default=50_000, ge=1, le=10_000_000, description="Images read (first N).")

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str) -> str:
        checked = _check_relative_path(v, "path")
        assert checked is not None
        return checked


class WeightedSource(TextSource):
    """One corpus of a factor union and its weight (weights are normalised to sum to 1)."""

    weight: float = Field(
        default=1.0, ge=0.0, allow_inf_nan=False, description="Finite, >= 0; not all weights may be zero."
    )


class CalibrationSpec(TextSource):
    """Calibration corpus for the K-FAC factors, packed into seq_len sequences with EOS between documents."""

    sources: list[WeightedSource] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Factor union instead of one corpus: each source's factors are collected (and cached) on "
        "their own, over up to max_tokens tokens each; the factors used are the weighted sum of the per-source "
        "means (weights normalised). Changing a weight re-uses every source's cached factors.",
    )
    images: ImageSource | None = Field(
        default=None,
        description="Labelled images instead of text, for an image-classification model (ViT): the factors "
        "use every token (patches and [CLS]) of every image and the classifier's loss.",
    )
    max_tokens: int = Field(default=200_000, ge=16, le=2_000_000_000, description="Token budget (per source).")
    seq_len: int = Field(default=256, ge=8, le=32_768, description="Packed sequence length.")
    batch_size: int = Field(
        default=8, ge=1, le=4096, description="Sequences (or images) per forward/backward pass."
    )

    @field_validator("sources")
    @classmethod
    def _some_weight(cls, v: list[WeightedSource] | None) -> list[WeightedSource] | None:
        if v is not None and not any(s.weight > 0 for s in v):
            raise ValueError("the source weights are all zero: give at least one source a weight > 0")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CalibrationSpec:  # replaces TextSource's: ``sources`` is a fourth way
        given = [n for n in ("dataset_id", "path", "texts", "sources", "images") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of dataset_id, path, texts, sources or images must be given (got {given or 'none'})"
            )
        return self

    def weighted_sources(self) -> list[tuple[TextSource, float]]:
        """``[(source, normalised weight)]``: the sources of a union, or this corpus with weight 1."""
        if self.sources is None:
            return [(self, 1.0)]
        total = sum(s.weight for s in self.sources)
        return [(s, s.weight / total) for s in self.sources]


class CurvatureSpec(StrictModel):
    """How the curvature (K-FAC) factors are estimated."""

    fisher: FisherType = Field(
        default="sampled",
        description="'sampled': targets drawn from the model's own predictive distribution (true Fisher); "
        "'empirical': the corpus's next tokens.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Seed for sampled Fisher targets (each label is keyed by seed, sequence and position, "
        "so batch size and shards do not change it).",
    )
    samples: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Sampled labels drawn per position (one shared forward; G averages their contributions). "
        "More samples lower the seed-to-seed spread of the edit; needs fisher 'sampled'.",
    )
    precision: AccumulationPrecision = Field(
        default="fp32",
        description="Precision of the factor accumulation's matrix-product inputs (accumulators stay "
        "float32): 'fp32', 'tf32' (TF32 tensor cores on a GPU; emulated rounding on CPU) or 'bf16'.",
    )
    logits_chunk: int = Field(
        default=1024,
        ge=1,
        le=1_048_576,
        description="Positions per logits chunk during collection: peak memory holds one "
        "(logits_chunk x vocabulary) float32 block instead of the whole batch's logits.",
    )
    eig_dtype: EigDType = Field(default="float32", description="Precision of the eigendecompositions.")
    estimator: Estimator = Field(
        default="kfac",
        description="'kfac': rank eigen-pair (i, j) by the product of the factor eigenvalues; 'ekfac': one more "
        "pass measures each pair's true second moment s_ij = E[(U_G^T g a^T U_A)_ij^2] and ranks by it "
        "(eigenvalue-corrected K-FAC; cached like the factors).",
    )

    @model_validator(mode="after")
    def _samples_need_sampled_fisher(self) -> CurvatureSpec:
        if self.samples != 1 and self.fisher != "sampled":
            raise ValueError(
                f"curvature.samples={self.samples} needs curvature.fisher='sampled' "
                "(the empirical label is unique): set samples to 1 or fisher to 'sampled'"
            )
        return self


class KeepMassOverride(StrictModel):
    """keep_mass for the targets this override matches (all given fields must match; last match wins)."""

    layer: int | None = Field(default=None, description="Layer index (negative counts from the end).")
    projection: Role | None = None
    module: str | None = Field(default=None, description="Module name or fnmatch glob.")
    keep_mass: KeepMass

    @model_validator(mode="after")
    def _selects_something(self) -> KeepMassOverride:
        if self.layer is None and self.projection is None and self.module is None:
            raise ValueError("an override needs at least one of layer, projection or module")
        return self


class EditSpec(StrictModel):
    """Which weights to edit and how much curvature mass to keep."""

    layers: list[int] | None = Field(
        default=None,
        description="Layer indices (negative counts from the end). Default: every layer. "
        "Ignored when 'modules' is given.",
        max_length=1024,
    )
    projections: list[Role] = Field(
        default_factory=lambda: list(DEFAULT_ROLES),
        description="MLP projection roles: gate, up, down (GPT-2 / GPT-NeoX / ViT have up and down only). "
        "Not given: the model's MLP input projections, gate+up of a gated MLP, else up.",
        min_length=1,
    )
    modules: list[str] | None = Field(
        default=None,
        description="Explicit module names or fnmatch globs; replaces layers/projections.",
        max_length=4096,
    )
    keep_mass: KeepMass | list[KeepMass] = Field(
        default=0.6,
        description="rho in (0, 1]; a list makes a sweep (factors and eigenbases computed once, one result per value).",
    )
    overrides: list[KeepMassOverride] = Field(default_factory=list, max_length=4096)

    @field_validator("keep_mass")
    @classmethod
    def _sweep_nonempty(cls, v: float | list[float]) -> float | list[float]:
        if isinstance(v, list):
            if not v:
                raise ValueError("keep_mass list must not be empty")
            if len(v) > 64:
                raise ValueError("keep_mass sweep has more than 64 values")
            if len(set(v)) != len(v):
                raise ValueError("keep_mass sweep values must be distinct")
        return v

    @field_validator("projections")
    @classmethod
    def _distinct_roles(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("projections must be distinct")
        return v

    @property
    def sweep(self) -> list[float]:
        """The keep_mass values to produce results for, in the order given."""
        return list(self.keep_mass) if isinstance(self.keep_mass, list) else [self.keep_mass]


class PairItem(StrictModel):
    prefix: str | list[int]
    suffix: str | list[int]


class PairSource(StrictModel):
    """Recitation set: prefix -> suffix pairs as an uploaded dataset / file (.jsonl with 'prefix' and
    'suffix' fields) or inline."""

    dataset_id: str | None = Field(default=None, description="Id of an uploaded .jsonl dataset.")
    path: str | None = Field(
        default=None, description="File under the data root: .jsonl with 'prefix' and 'suffix' fields per line."
    )
    pairs: list[PairItem] | None = Field(
        default=None, max_length=100_000, description="Inline pairs; prefix/suffix as text or token ids."
    )

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str | None) -> str | None:
        return _check_relative_path(v, "path")

    @field_validator("dataset_id")
    @classmethod
    def _dataset_ok(cls, v: str | None) -> str | None:
        return _check_dataset_id(v)

    @model_validator(mode="after")
    def _one_source(self) -> PairSource:
        given = [n for n in ("dataset_id", "path", "pairs") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of dataset_id, path or pairs must be given (got {given or 'none'})")
        return self


class RecitationEval(PairSource):
    """Recitation of prefix -> suffix pairs: greedy generation, token-level edit distance."""

    prefix_tokens: int = Field(default=64, ge=1, le=8192, description="Prefix length in tokens.")
    suffix_tokens: int = Field(default=48, ge=1, le=8192, description="Greedy-generated suffix length.")
    loose_threshold: float = Field(
        default=0.75, gt=0.0, le=1.0, description="Loose recitation: 1 - d/L at least this (d = token edit distance)."
    )
    max_examples: int = Field(default=2000, ge=1, le=100_000, description="Pairs evaluated (first N).")


class PerplexityEval(TextSource):
    """Token-weighted perplexity on held-out text."""

    seq_len: int = Field(default=256, ge=8, le=32_768, description="Packed sequence length.")
    max_tokens: int = Field(default=100_000, ge=16, le=100_000_000, description="Held-out token budget.")


class AgreementEval(StrictModel):
    """nDCG@k of the edited model's top-k next tokens against the unedited model's."""

    k: int = Field(default=10, ge=1, le=1000, description="Ranking depth of nDCG@k.")
    source: TextSource | None = Field(default=None, description="Texts to compare on; default: perplexity texts.")
    max_tokens: int = Field(default=20_000, ge=16, le=10_000_000, description="Positions compared (token budget).")


class ClassificationEval(StrictModel):
    """Accuracy of an image classifier: on the memorised set (the labels it was trained on, e.g.
    flipped ones) and on a clean held-out set. Accuracy = share of images predicted as their label."""

    memorized: ImageSource | None = Field(
        default=None, description="Images with the labels the model memorised (an edit should lower this)."
    )
    heldout: ImageSource | None = Field(
        default=None, description="Clean held-out images and their true labels (an edit should keep this)."
    )

    @model_validator(mode="after")
    def _some_set(self) -> ClassificationEval:
        if self.memorized is None and self.heldout is None:
            raise ValueError("evaluation.classification needs memorized or heldout images (or both)")
        return self


class EvaluationSpec(StrictModel):
    """Metrics measured before the edit and after it, at every sweep point (optional)."""

    recitation: RecitationEval | None = None
    perplexity: PerplexityEval | None = None
    agreement: AgreementEval | None = None
    classification: ClassificationEval | None = Field(
        default=None, description="Image classifiers only: memorised-set and held-out accuracy."
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="Sequences (or images) per evaluation pass.")

    @model_validator(mode="after")
    def _agreement_has_texts(self) -> EvaluationSpec:
        if self.agreement is not None and self.agreement.source is None and self.perplexity is None:
            raise ValueError("evaluation.agreement needs agreement.source or evaluation.perplexity texts")
        return self

    def text_metrics(self) -> list[str]:
        """The text-model metrics asked for (recitation, perplexity, agreement)."""
        return [n for n in ("recitation", "perplexity", "agreement") if getattr(self, n) is not None]


class DiscoverForget(TextSource):
    """A corpus to scan for windows the model recites (``workers.evaluation.discovery``); the
    windows found become the forget set."""

    prefix_tokens: int = Field(default=32, ge=1, le=8192, description="Window prefix length in tokens.")
    suffix_tokens: int = Field(default=32, ge=1, le=8192, description="Window suffix length in tokens.")
    stride: int | None = Field(default=None, ge=1, le=8192, description="Window step; default suffix_tokens.")
    max_windows: int = Field(default=20_000, ge=1, le=1_000_000, description="Candidate windows tested (cap).")


class ForgetObjective(RecitationEval):
    """What must be forgotten — recitation pairs (``path`` / ``dataset_id`` / ``pairs``, exactly as in
    ``evaluation.recitation``) or ``discover`` — and the recitation rates allowed after the edit."""

    discover: DiscoverForget | None = Field(default=None, description="Find the forget set by discovery.")
    max_strict_rate: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Highest strict recitation rate allowed on the forget set."
    )
    max_loose_rate: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Highest loose recitation rate allowed on the forget set."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ForgetObjective:  # replaces PairSource's check: discover is a source too
        given = [n for n in ("dataset_id", "path", "pairs", "discover") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of dataset_id, path, pairs or discover must be given (got {given or 'none'})"
            )
        if self.max_strict_rate is None and self.max_loose_rate is None:
            raise ValueError("give max_strict_rate and/or max_loose_rate: the recitation rate the edit must reach")
        return self


class RetainObjective(StrictModel):
    """What must be kept, measured on held-out text the caller gives (no default corpus)."""

    perplexity: PerplexityEval = Field(
        description="Held-out texts (text the factors did not see) for the perplexity cap; required."
    )
    max_perplexity_increase: float = Field(
        gt=0.0, le=100.0, description="Highest relative perplexity increase allowed, e.g. 0.10 for +10 %."
    )
    min_agreement_ndcg: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Lowest nDCG@10 against the unedited model on the same texts."
    )


class SearchSpace(StrictModel):
    """Where the search looks and how many evaluations it may spend."""

    layer_sets: list[list[int]] | None = Field(
        default=None,
        max_length=256,
        description="Candidate layer sets; default: every contiguous window of 1-3 layers.",
    )
    projections: list[Role] = Field(
        default_factory=lambda: list(DEFAULT_ROLES),
        min_length=1,
        description="Projection roles searched. Not given: the model's MLP input projections, gate+up of a "
        "gated MLP, else up.",
    )
    keep_mass_range: tuple[float, float] = Field(
        default=(0.5, 0.9999), description="[low, high] of rho searched (0 < low < high <= 1)."
    )
    max_trials: int = Field(default=48, ge=2, le=1000, description="Most evaluations the search may spend.")
    screen_fraction: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="Share of the forget pairs and retain tokens used while screening (1.0: no screening); "
        "the chosen point is confirmed on the full sets.",
    )

    @field_validator("layer_sets")
    @classmethod
    def _sets_ok(cls, v: list[list[int]] | None) -> list[list[int]] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("layer_sets must not be empty; omit it for the service default")
        for i, s in enumerate(v):
            if not s:
                raise ValueError(f"layer_sets[{i}] must not be empty")
            if len(set(s)) != len(s):
                raise ValueError(f"layer_sets[{i}] repeats a layer")
        return v

    @field_validator("keep_mass_range")
    @classmethod
    def _range_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 < lo < hi <= 1.0:
            raise ValueError(f"expected 0 < low < high <= 1, got [{lo}, {hi}]")
        return v

    @field_validator("projections")
    @classmethod
    def _distinct_roles(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("projections must be distinct")
        return v


class ObjectiveSpec(StrictModel):
    """Goal-directed edit: the service searches layers and rho for the least-damaging edit that
    meets ``forget`` while keeping ``retain`` (see ``workers.search``)."""

    forget: ForgetObjective
    retain: RetainObjective
    search: SearchSpace = Field(default_factory=SearchSpace)


class OutputSpec(StrictModel):
    """Where and what to write."""

    path: str | None = Field(
        default=None,
        description="Directory under the configured output root; default '<job id>'. Must not exist yet.",
    )
    save_model: bool = Field(default=True, description="Write the full edited Hugging Face model directory.")
    save_delta: bool = Field(default=True, description="Write delta.safetensors (original and edited tensors).")
    register_as: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-/ ]{0,199}$",
        description="With MLflow configured: register the edited model as a new version of this registered "
        "model. Needs a job with one result (one keep_mass, or an objective) and save_model.",
    )
    best_effort: bool = Field(
        default=False,
        description="With an objective: when no trial meets the targets, still write the best trial's edit "
        "(the job succeeds with search.met = false) instead of failing with objective_not_met and no model.",
    )

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str | None) -> str | None:
        return _check_relative_path(v, "output.path")


class NotifySpec(StrictModel):
    """A webhook for this job's events. Submitting creates an endpoint scoped to the job; its signing
    secret is returned once, in the submission response (``webhook.secret``)."""

    url: str = Field(max_length=MAX_URL_CHARS, description="http(s) URL that receives signed POSTs.")
    events: list[EventName] = Field(
        default_factory=lambda: list(DEFAULT_EVENTS),  # type: ignore[arg-type]
        min_length=1,
        description="Events to deliver: succeeded, failed, cancelled (default), stage_changed, trial.",
    )

    @field_validator("url")
    @classmethod
    def _url_ok(cls, v: str) -> str:
        return check_url(v)

    @field_validator("events")
    @classmethod
    def _distinct_events(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("events must be distinct")
        return v


class EditJobSpec(StrictModel):
    """A complete edit job."""

    model: ModelSpec
    calibration: CalibrationSpec
    curvature: CurvatureSpec = Field(default_factory=CurvatureSpec)
    # objective comes before edit: the edit validator needs to know whether there is one.
    objective: ObjectiveSpec | None = Field(
        default=None, description="Goal-directed edit: the service chooses layers and keep_mass (see ObjectiveSpec)."
    )
    edit: EditSpec = Field(default_factory=EditSpec)
    evaluation: EvaluationSpec | None = None
    output: OutputSpec = Field(default_factory=OutputSpec)
    notify: NotifySpec | None = Field(default=None, description="Signed webhook for this job's events.")

    @field_validator("objective")
    @classmethod
    def _objective_needs_kfac(cls, objective: ObjectiveSpec | None, info: ValidationInfo) -> ObjectiveSpec | None:
        curvature = info.data.get("curvature")
        if objective is not None and curvature is not None and curvature.estimator != "kfac":
            raise ValueError(
                "objective needs curvature.estimator='kfac' (the goal-directed search ranks by K-FAC "
                "eigenvalues only): drop the objective or set curvature.estimator to 'kfac'"
            )
        return objective

    @field_validator("objective")
    @classmethod
    def _objective_needs_text(cls, objective: ObjectiveSpec | None, info: ValidationInfo) -> ObjectiveSpec | None:
        calibration = info.data.get("calibration")
        if objective is not None and calibration is not None and calibration.images is not None:
            raise ValueError(
                "objective is for text models (recitation and perplexity targets); with calibration.images "
                "give edit.layers and edit.keep_mass (a list sweeps) and evaluation.classification instead"
            )
        return objective

    @field_validator("evaluation")
    @classmethod
    def _evaluation_matches_data(cls, evaluation: EvaluationSpec | None, info: ValidationInfo) -> EvaluationSpec | None:
        calibration = info.data.get("calibration")
        if evaluation is None or calibration is None:
            return evaluation
        if calibration.images is not None and evaluation.text_metrics():
            raise ValueError(
                f"evaluation.{evaluation.text_metrics()[0]} measures a text model, but calibration.images makes "
                "this an image-classifier job: use evaluation.classification"
            )
        if calibration.images is None and evaluation.classification is not None:
            raise ValueError(
                "evaluation.classification is for image classifiers: give calibration.images, or measure a "
                "text model with evaluation.recitation / perplexity / agreement"
            )
        return evaluation

    @field_validator("edit")
    @classmethod
    def _objective_owns_the_edit(cls, edit: EditSpec, info: ValidationInfo) -> EditSpec:
        """Each edit choice given beside an objective is its own error, located at ``edit.<name>``
        (a ValidationError raised here is merged under ``edit``), so the 422 names that field."""
        if info.data.get("objective") is None:
            return edit
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "objective_owns_edit",
                    "must be absent when objective is given: the search chooses the layers and keep_mass "
                    "(remove it; restrict the search with objective.search.layer_sets / keep_mass_range)",
                ),
                loc=(name,),
                input=getattr(edit, name),
            )
            for name in ("layers", "keep_mass", "modules", "overrides")
            if name in edit.model_fields_set
        ]
        if errors:
            raise ValidationError.from_exception_data("EditSpec", errors)
        return edit

    @field_validator("output")
    @classmethod
    def _one_model_to_register(cls, output: OutputSpec, info: ValidationInfo) -> OutputSpec:
        if output.register_as is None:
            return output
        edit = info.data.get("edit")
        if info.data.get("objective") is None and edit is not None and len(edit.sweep) > 1:
            raise ValueError(
                f"output.register_as needs a job with one result, but edit.keep_mass is a sweep of "
                f"{len(edit.sweep)} values; register one keep_mass (or use an objective)"
            )
        if not output.save_model:
            raise ValueError("output.register_as needs output.save_model=true (there is no model to register)")
        return output

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """With an objective the edit section's layers / keep_mass are the search's to choose: they
        are left out of the dump, so a dumped spec validates again (and reads as what was asked)."""
        data: dict[str, Any] = handler(self)
        if self.objective is not None and isinstance(data.get("edit"), dict):
            for name in ("layers", "keep_mass", "modules", "overrides"):
                data["edit"].pop(name, None)
        return data


def with_model_projections(spec: EditJobSpec, available: Sequence[str]) -> EditJobSpec:
    """``spec`` with ``edit.projections`` (and ``objective.search.projections``) set to the model's
    default (``contract.families.default_roles`` of the roles it ``available``-ly has) where the caller
    did not give them; what the caller gave is kept (and validated against the model elsewhere)."""
    roles = default_roles(available)
    update: dict[str, Any] = {}
    if "projections" not in spec.edit.model_fields_set:
        update["edit"] = spec.edit.model_copy(update={"projections": roles})
    if spec.objective is not None and "projections" not in spec.objective.search.model_fields_set:
        search = spec.objective.search.model_copy(update={"projections": roles})
        update["objective"] = spec.objective.model_copy(update={"search": search})
    return spec.model_copy(update=update) if update else spec
