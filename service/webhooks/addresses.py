"""Delivery-time SSRF check: resolve the target host and refuse it unless *every* address it
resolves to is allowed (``contract.webhooks.urls.address_allowed``).

Checking all addresses (not just the first) means a name with one public and one private record
is refused. The check runs right before each attempt, so a name re-pointed at a private address
after registration is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from contract.webhooks.urls import address_allowed


class AddressRefused(Exception):
    """The target resolves to an address this deployment does not deliver to."""


def resolve(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_target(url: str, *, allow_private: bool) -> list[str]:
    """The addresses ``url``'s host resolves to; raises ``AddressRefused`` if any is not allowed
    (or the name does not resolve)."""
    try:
        addresses = resolve(url)
    except OSError as exc:
        raise AddressRefused(f"cannot resolve {urlsplit(url).hostname!r}: {exc}") from None
    bad = [a for a in addresses if not address_allowed(a, allow_private=allow_private)]
    if bad:
        raise AddressRefused(
            f"{urlsplit(url).hostname} resolves to {', '.join(bad)}: private, loopback or link-local "
            "addresses are refused (CURVEDIT_WEBHOOK_ALLOW_PRIVATE=true allows them)"
        )
    return addresses
