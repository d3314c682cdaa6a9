"""Which URLs a server may fetch or call for its clients.

A server that fetches an image URL or calls a webhook URL given by a client
must not become the client's way into the server's own network: the cloud
metadata service on a rented GPU (169.254.169.254), localhost admin ports, the
provider's private subnet. So, unless the operator allows it
(`stillmotion serve --allow-private-urls`), a URL whose host resolves to a
loopback, private, link-local, shared (CGNAT), multicast, reserved or
unspecified address is refused, at submission and again for every request
and redirect hop of the fetch itself. (A DNS answer that changes between the
check and the connection is not covered.) Local command-line use is not
restricted: there the user is the operator.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import InvalidInput

ALLOW_FLAG = "--allow-private-urls"


def blocked_address(host: str) -> str | None:
    """The first non-public address `host` resolves to (None when all are public)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return None  # unresolvable: the fetch itself fails with its own clear message
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return str(ip)
    return None


def check_public_url(url: str, what: str) -> None:
    """Raise InvalidInput when `url`'s host is not a public internet address."""
    host = urlsplit(url).hostname
    if not host:
        raise InvalidInput(f"{what}: {url[:100]!r} has no host; send an http(s) URL.")
    bad = blocked_address(host)
    if bad is not None:
        raise InvalidInput(
            f"{what}: {host} resolves to {bad}, a private or local address; this server only reaches public "
            f"URLs (its operator can start it with {ALLOW_FLAG})."
        )


def request_hook(what: str):
    """An httpx request event hook applying check_public_url to every request, redirects included."""

    def hook(request) -> None:
        check_public_url(str(request.url), what)

    return hook
