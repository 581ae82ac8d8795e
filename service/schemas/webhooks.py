"""Webhook schemas: ``WebhookCreate`` (POST body), ``Webhook`` / ``WebhookWithSecret`` (an endpoint;
the secret only in the response that created it), ``WebhookList``, ``Delivery`` and ``DeliveryList``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract.webhooks.events import DEFAULT_EVENTS, EventName
from contract.webhooks.urls import MAX_URL_CHARS, check_url


class WebhookCreate(BaseModel):
    """Body of POST /v1/webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_CHARS, description="http(s) URL that receives signed POSTs.")
    events: list[EventName] = Field(
        default_factory=lambda: list(DEFAULT_EVENTS),  # type: ignore[arg-type]
        min_length=1,
        description="Events to receive: succeeded, failed, cancelled, stage_changed, trial.",
    )
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _url_ok(cls, v: str) -> str:
        return check_url(v)

    @field_validator("events")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("events must be distinct")
        return v


class Webhook(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None = None
    job_id: str | None = Field(default=None, description="Set for the endpoint a job's spec.notify created.")
    created_at: datetime


class WebhookWithSecret(Webhook):
    secret: str = Field(description="Signing secret (whsec_...). Shown only in this response; store it now.")


class WebhookList(BaseModel):
    data: list[Webhook]
    next_cursor: str | None = None


class DeliveryAttempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    response: str | None = Field(default=None, description="First 512 characters of the receiver's answer.")
    duration_ms: float | None = None


class Delivery(BaseModel):
    id: str = Field(description="Also the webhook-id header: the same on every retry and redelivery.")
    webhook_id: str
    job_id: str
    event: str
    type: str
    status: Literal["pending", "retrying", "succeeded", "failed"]
    attempts: list[DeliveryAttempt]
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None = None
    redeliveries: int = 0
    payload: dict[str, Any] = Field(description="The message body that is signed and sent.")


class DeliveryList(BaseModel):
    data: list[Delivery]
    next_cursor: str | None = None
