"""Deployment settings (one pydantic-settings ``Settings``), read from ``CURVEDIT_*`` environment
variables or a ``.env`` file. Shared by the gateway, the workers and the CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.summation import SUM_SEGMENTS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CURVEDIT_", env_file=".env", extra="ignore")

    # --- Redis / queues -------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis URL. Unset: `curvedit up` starts an embedded Redis under state_dir.",
    )
    queue_name: str = Field(default="curvedit-edits", description="RQ queue the edit jobs go to.")
    job_timeout_s: int = Field(default=6 * 3600, ge=10, description="Hard limit for one edit job.")
    failure_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long RQ keeps failed jobs.")
    idempotency_ttl_s: int = Field(default=48 * 3600, ge=24 * 3600, description="Idempotency-Key lifetime.")
    worker_heartbeat_s: int = Field(default=15, ge=1, description="Liveness heartbeat period of a worker.")
    job_max_attempts: int = Field(
        default=2, ge=1, description="Runs of a job whose worker died mid-job before it fails with 'worker_lost'."
    )

    # --- Roots (every user-supplied path must resolve inside one of these) ----------------
    state_dir: Path = Field(default=Path(".curvedit"), description="Embedded Redis data, default roots.")
    model_root: Path = Field(
        default=Path("examples"),
        description="Root for spec.model.path (default: the bundled examples). Must not contain "
        "state_dir, output_root or dataset_dir (checked at start-up).",
    )
    data_root: Path = Field(
        default=Path("examples"),
        description="Root for calibration/evaluation file paths. Must not contain state_dir, output_root "
        "or dataset_dir (checked at start-up).",
    )
    output_root: Path = Field(
        default=Path(".curvedit/artifacts"),
        description="Root for artifacts; each owner's jobs write under <output_root>/<owner>/.",
    )
    dataset_dir: Path = Field(default=Path(".curvedit/datasets"), description="Uploaded datasets.")

    # --- Factor cache --------------------------------------------------------------------
    factor_cache: str = Field(
        default="redis",
        description="'redis' (default), 'off', or an fsspec URI / directory for a filesystem tier.",
    )
    factor_cache_bytes: int = Field(default=8 * 2**30, ge=0, description="Cache byte budget (LRU-evicted).")
    factor_chunk_bytes: int = Field(
        default=64 * 2**20, ge=2**16, le=500 * 2**20, description="Largest Redis string one cache chunk uses."
    )
    collect_shards: int = Field(
        default=1,
        ge=1,
        le=SUM_SEGMENTS,
        description="Split factor collection into this many RQ shard jobs (the sums are additive); "
        "1 = the job collects alone. Needs the factor cache (it carries the partial sums). At most "
        f"{SUM_SEGMENTS}: a shard is whole summation segments, so any count gives the unsharded sums exactly.",
    )

    # --- Security and limits ---------------------------------------------------------------
    api_keys: str = Field(
        default="",
        description="Comma-separated 'name:key' pairs (or bare keys). Empty: auth disabled (dev only).",
    )
    allow_remote_code: bool = Field(default=False, description="Permit model.trust_remote_code=true.")
    max_upload_bytes: int = Field(default=256 * 2**20, ge=1024, description="Largest dataset upload.")
    max_body_bytes: int = Field(default=8 * 2**20, ge=1024, description="Largest JSON request body.")
    max_streams_per_key: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Open event streams (GET .../events/stream) one API key may hold at once, counted in "
        "Redis across every gateway process; beyond it 429 too_many_streams.",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without an API key (only where the gateway's port is private). "
        "Default: /metrics needs a valid API key like every /v1 route (Prometheus: authorization.credentials).",
    )

    # --- Webhooks (service.webhooks) ---------------------------------------------------------
    webhook_queue_name: str = Field(
        default="curvedit-webhooks", description="RQ queue of webhook deliveries (worked by the delivery worker)."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Deliver to private, loopback and link-local addresses (off: every address a target "
        "resolves to must be public, checked at each attempt).",
    )
    webhook_max_attempts: int = Field(default=8, ge=2, le=50, description="Attempts per delivery before 'failed'.")
    webhook_backoff_s: int = Field(default=5, ge=1, description="Wait before the first retry; doubles per retry.")
    webhook_backoff_max_s: int = Field(default=3600, ge=1, description="Longest wait between two attempts.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Timeout of one delivery POST.")
    webhook_log_ttl_s: int = Field(default=30 * 24 * 3600, ge=3600, description="How long deliveries are kept.")

    # --- MLflow (workers.tracking; needs the `mlflow` extra) ---------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (http://..., sqlite:///..., a directory). Unset: no MLflow logging.",
    )
    mlflow_registry_uri: str | None = Field(default=None, description="Model registry URI; default: the tracking URI.")
    mlflow_experiment: str = Field(default="curvedit", min_length=1, description="Experiment the job runs go to.")
    mlflow_artifact_location: str | None = Field(
        default=None,
        description="Artifact location of the experiment when curvedit creates it; default: the tracking "
        "server's (for a sqlite:/// or directory store: ./mlruns under the worker's working directory).",
    )
    mlflow_attempts: int = Field(default=3, ge=1, le=20, description="Attempts to log a job before giving up.")
    mlflow_backoff_s: float = Field(default=2.0, ge=0, description="Wait before the 2nd attempt; doubles after.")
    mlflow_log_model: bool = Field(default=True, description="Log the edited model of a one-result job.")

    # --- Logs and traces (contract.logs, contract.tracing) ----------------------------------
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per log line, with job_id and request_id."
    )
    log_level: str = Field(default="INFO", description="Root log level (DEBUG, INFO, WARNING, ...).")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="OpenTelemetry spans (gateway requests, jobs and their stages): off, printed, or OTLP/HTTP.",
    )
    otel_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces endpoint; default: the SDK's.")
    otel_service_name: str = Field(default="curvedit", description="service.name of the spans.")

    # --- Workers -----------------------------------------------------------------------------
    device: str = Field(default="auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'.")
    device_map: str | None = Field(default=None, description="Passed to from_pretrained, e.g. 'auto'.")
    worker_memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="Memory of one worker device in GiB: a job whose preflight peak exceeds it is refused "
        "with a 422 naming the knob to change. Unset: no limit is enforced (the estimate is still recorded).",
    )
    worker_tflops: float = Field(
        default=0.5, gt=0, description="Sustained TFLOP/s of one worker device, for the preflight time estimate."
    )
    worker_devices: int = Field(
        default=1, ge=1, le=64, description="Devices per worker that CURVEDIT_DEVICE_MAP spreads the weights over."
    )

    def key_table(self) -> dict[str, str]:
        """Map of api key -> owner name."""
        table: dict[str, str] = {}
        for i, item in enumerate(p.strip() for p in self.api_keys.split(",")):
            if not item:
                continue
            name, sep, key = item.partition(":")
            table[key if sep else name] = name if sep else f"key{i}"
        return table


@lru_cache
def get_settings() -> Settings:
    return Settings()
