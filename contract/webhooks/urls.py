"""Static checks of a webhook target URL, and the address policy applied when it is delivered to.

``check_url`` runs wherever a URL enters the system (``notify.url`` in a job spec, ``POST
/v1/webhooks``): http or https only, a host, no user name or password in the URL, no fragment,
and, unless private targets are allowed, no literal private/loopback/link-local IP. Host names are
resolved again at delivery time and *every* address must pass ``address_allowed`` (SSRF: a name
that points at 169.254.169.254 or 10.0.0.5 is refused there, not here).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """A public (globally routable) unicast address, or anything when ``allow_private``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if allow_private:
        return not ip.is_unspecified
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool = True) -> str:
    """Return ``url`` unchanged if it is an acceptable webhook target; otherwise raise
    ``ValueError`` with a message that says what to fix."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL has {len(url)} characters, more than {MAX_URL_CHARS}")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("the URL must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the URL scheme must be http or https, got {parts.scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("the URL must not contain a user name or password; receivers verify the signature instead")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    if parts.fragment:
        raise ValueError("the URL must not have a #fragment")
    if port == 0:
        raise ValueError("the URL port must be 1-65535")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not address_allowed(str(literal), allow_private=allow_private):
        raise ValueError(
            f"{host} is a private, loopback or link-local address; this deployment only delivers to public "
            "addresses (CURVEDIT_WEBHOOK_ALLOW_PRIVATE=true allows them)"
        )
    return url
