"""Edit job schemas: ``EditJobCreate`` (the request body: the job spec), ``EditJob`` (a job record)
and ``EditJobList`` (a page of jobs), plus the event shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from contract.spec import EditJobSpec

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class EditJobCreate(EditJobSpec):
    """Body of POST /v1/edit-jobs: an edit job spec (unknown fields are rejected)."""


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
    code: str
    message: str


class NotifyWebhook(BaseModel):
    id: str
    secret: str = Field(description="whsec_... signing secret of spec.notify deliveries; store it now.")


class EditJob(BaseModel):
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
    result: dict[str, Any] | None = Field(
        default=None, description="Set on success: metrics, per-sweep-point results, artifact locations."
    )
    error: JobError | None = Field(default=None, description="Set on failure only.")
    cancel_requested: bool = False
    worker: str | None = None
    attempts: int = 0
    last_event_seq: int = Field(default=0, description="seq of the newest event (see /events?after=).")
    webhook: NotifyWebhook | None = Field(
        default=None,
        description="Only in the response that created a job with spec.notify: the job's webhook endpoint "
        "and its signing secret (shown once).",
    )


class EditJobList(BaseModel):
    data: list[EditJob]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page; null at the end.")
    unreadable: list[str] = Field(
        default_factory=list,
        description="Ids of jobs on this page whose stored record cannot be read (GET on one answers 409 "
        "corrupt_record); they are left out of data.",
    )


class JobEvent(BaseModel):
    seq: int
    time: datetime
    level: Literal["debug", "info", "warning", "error"]
    message: str
    data: dict[str, Any] | None = None
