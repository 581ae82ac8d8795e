"""``/v1/webhooks``: register (secret shown once), list, read and delete webhook endpoints; read an
endpoint's delivery log and redeliver one delivery. Every endpoint is visible only to its key."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from contract.webhooks.urls import check_url
from service.api.deps import OwnerDep, RedisDep, SettingsDep
from service.errors import ApiError
from service.schemas.common import ERROR_RESPONSES
from service.schemas.webhooks import Delivery, DeliveryList, Webhook, WebhookCreate, WebhookList, WebhookWithSecret
from service.webhooks.queue import enqueue_delivery
from service.webhooks.records import (
    MAX_ENDPOINTS_PER_OWNER,
    PENDING,
    RETRYING,
    Record,
    WebhookStore,
    public,
)
from service.webhooks.signing import new_secret

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)

_WEBHOOK_ID = re.compile(r"wh_[0-9a-f]{1,64}")
_DELIVERY_ID = re.compile(r"msg_[0-9a-f]{1,64}")


def get_webhook_store(r: RedisDep, settings: SettingsDep) -> WebhookStore:
    return WebhookStore(r, log_ttl_s=settings.webhook_log_ttl_s)


WebhookStoreDep = Annotated[WebhookStore, Depends(get_webhook_store)]


def _owned(store: WebhookStore, webhook_id: str, owner: str) -> Record:
    rec = store.get(webhook_id) if _WEBHOOK_ID.fullmatch(webhook_id) else None
    if rec is None or rec["owner"] != owner:
        raise ApiError(404, "not_found", f"no webhook {webhook_id!r}")
    return rec


def _delivery_out(rec: Record) -> Record:
    return {**rec, "payload": json.loads(rec["payload"])}


def check_target_url(url: str, settings: Any, field: str) -> None:
    """The deployment's address policy for a literal IP in ``url`` (422 naming ``field``)."""
    try:
        check_url(url, allow_private=settings.webhook_allow_private)
    except ValueError as exc:
        raise ApiError(422, "validation_error", f"{field}: {exc}", field=field) from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookWithSecret, summary="Register a webhook")
def create_webhook(body: WebhookCreate, owner: OwnerDep, settings: SettingsDep, store: WebhookStoreDep) -> Record:
    """Every job of this key whose events match is delivered to ``url``, signed with the returned
    secret (Standard Webhooks). The secret is shown only in this response."""
    check_target_url(body.url, settings, "url")
    if store.count(owner) >= MAX_ENDPOINTS_PER_OWNER:
        raise ApiError(
            422, "too_many_webhooks", f"at most {MAX_ENDPOINTS_PER_OWNER} webhooks per key; delete one first"
        )
    return store.create(owner, body.url, list(body.events), new_secret(), description=body.description)


@router.get("", response_model=WebhookList, summary="List your webhooks, newest first")
def list_webhooks(
    owner: OwnerDep,
    store: WebhookStoreDep,
    cursor: Annotated[str | None, Query(pattern=r"^wh_[0-9a-f]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    items, next_cursor = store.list(owner, cursor=cursor, limit=limit)
    return {"data": [public(e) for e in items], "next_cursor": next_cursor}


@router.get("/{webhook_id}", response_model=Webhook, summary="One webhook (without its secret)")
def get_webhook(webhook_id: str, owner: OwnerDep, store: WebhookStoreDep) -> Record:
    return public(_owned(store, webhook_id, owner))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a webhook and its log")
def delete_webhook(webhook_id: str, owner: OwnerDep, store: WebhookStoreDep) -> Response:
    store.delete(_owned(store, webhook_id, owner))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, summary="The webhook's delivery log")
def list_deliveries(
    webhook_id: str,
    owner: OwnerDep,
    store: WebhookStoreDep,
    cursor: Annotated[str | None, Query(pattern=r"^msg_[0-9a-f]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    _owned(store, webhook_id, owner)
    items, next_cursor = store.deliveries(webhook_id, cursor=cursor, limit=limit)
    return {"data": [_delivery_out(d) for d in items], "next_cursor": next_cursor}


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Delivery,
    summary="Send a delivery again",
)
def redeliver(
    webhook_id: str, delivery_id: str, owner: OwnerDep, r: RedisDep, settings: SettingsDep, store: WebhookStoreDep
) -> Record:
    """Queues the same message (same ``webhook-id`` and body, a fresh signature and timestamp) with a
    fresh set of attempts. A delivery still pending or retrying is 409."""
    _owned(store, webhook_id, owner)
    rec = store.get_delivery(delivery_id) if _DELIVERY_ID.fullmatch(delivery_id) else None
    if rec is None or rec["webhook_id"] != webhook_id:
        raise ApiError(404, "not_found", f"no delivery {delivery_id!r} for webhook {webhook_id!r}")
    busy: list[str] = []

    def fn(d: Record) -> Record | None:
        if d["status"] in (PENDING, RETRYING):
            busy.append(d["status"])
            return None
        return {**d, "status": PENDING, "next_attempt_at": None, "redeliveries": int(d.get("redeliveries", 0)) + 1}

    new = store.update_delivery(delivery_id, fn)
    if new is None:
        raise ApiError(
            409,
            "delivery_in_progress",
            f"delivery {delivery_id} is {busy[0] if busy else 'gone'}; redeliver it once it has succeeded or failed",
        )
    enqueue_delivery(r, settings, delivery_id, rq_id=f"{delivery_id}-r{new['redeliveries']}")
    return _delivery_out(new)
