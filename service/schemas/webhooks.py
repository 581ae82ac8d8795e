"""Webhook schemas: ``WebhookCreate`` (POST body), ``Webhook`` / ``WebhookWithSecret`` (an endpoint;
the secret only in the response that created it), ``WebhookList``, ``Delivery`` and ``DeliveryList``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from contract.spec import NotifySpec


class WebhookCreate(NotifySpec):
    """Body of POST /v1/webhooks: the same target and events as a job's ``notify``, plus a label."""

    description: str | None = Field(default=None, max_length=500)


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
