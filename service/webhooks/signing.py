"""Standard Webhooks signatures: secrets, the three signature headers, and verification for receivers.

A secret is ``whsec_`` + base64 of 32 random bytes. A message is signed as
``v1,base64(HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>"))`` and sent with the
``webhook-id`` (the same on every retry and redelivery, so receivers can de-duplicate),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature`` headers. Signing and
verification are the ``standardwebhooks`` package's, so a receiver using any Standard Webhooks
library verifies these messages.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_PREFIX = "whsec_"

__all__ = ["WebhookVerificationError", "new_secret", "sign_headers", "verify_webhook"]


def new_secret() -> str:
    """A fresh signing secret, ``whsec_<base64 of 32 random bytes>``."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def sign_headers(secret: str, msg_id: str, body: str, *, timestamp: float | None = None) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers for ``body``."""
    ts = int(time.time() if timestamp is None else timestamp)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> Any:
    """For receivers: check the signature and timestamp (5 minutes' tolerance) of a delivered
    message and return its parsed JSON body. Raises ``WebhookVerificationError`` when the
    signature does not match, a header is missing, or the timestamp is too old or too new.

    ``payload`` must be the raw request body, byte for byte; ``headers`` the request headers."""
    return Webhook(secret).verify(payload, dict(headers.items()))
