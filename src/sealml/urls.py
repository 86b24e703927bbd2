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
    return parts.scheme == "http" and is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """Whether *host* names this machine's loopback interface (``localhost``, 127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
