"""Rules for the URLs sealml sends data or credentials to."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def transport_is_protected(url: str) -> bool:
    """Whether *url* is https to some host, or plain http to a loopback address (a local
    relay or test server, where nothing crosses a network)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
