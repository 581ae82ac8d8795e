"""Edit job schemas: ``EditJobCreate`` (the request body: the job spec), ``EditJob`` (a job record,
``contract.results.JobRecord``, plus the one-time webhook secret) and ``EditJobList`` (a page of
jobs). The record, result and event models themselves live in ``contract/results.py``: the worker
stores them, this API returns them and the CLI renders them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from contract.results import JobEvent, JobRecord, JobStatus
from contract.spec import EditJobSpec

__all__ = ["EditJob", "EditJobCreate", "EditJobList", "JobEvent", "JobStatus", "NotifyWebhook"]


class EditJobCreate(EditJobSpec):
    """Body of POST /v1/edit-jobs: an edit job spec (unknown fields are rejected)."""


class NotifyWebhook(BaseModel):
    id: str
    secret: str = Field(description="whsec_... signing secret of spec.notify deliveries; store it now.")


class EditJob(JobRecord):
    """A job record as the API returns it (``JobRecord`` plus the one-time webhook secret)."""

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

