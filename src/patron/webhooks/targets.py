"""Where a webhook may be sent: not into Patron's own network (docs/webhooks.md, "Where
webhooks may go").

Whoever may register an endpoint could otherwise make Patron's server call what only it can
reach: the database's admin page, another service on localhost, the cloud's metadata service
(169.254.169.254, Alibaba Cloud's 100.100.100.200) that hands out credentials. So an endpoint
must resolve to global addresses only: loopback, link-local, private, shared (100.64/10),
reserved, multicast and unspecified addresses are refused, unless
``PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS`` says the receivers live inside (and the tests, whose
receivers listen on 127.0.0.1).

Checked when an endpoint is registered or changed (a clear 422) and again at every delivery:
the host is resolved, every address checked, and the request sent to the checked address
(``Host`` and TLS SNI keep the name), so a name that resolved to a public address when it was
registered and to 127.0.0.1 later (DNS rebinding) gets nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# socket.getaddrinfo, or a stand-in (tests of DNS rebinding).
Resolver = Callable[[str, int], list[str]]


class TargetRefused(Exception):
    """The URL's host is, or resolves to, an address Patron does not send to."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, an address inside the network")
        self.host = host
        self.address = address


class TargetUnresolved(Exception):
    """The host's name does not resolve (now)."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolved(f"{host}: {exc}") from exc
    return [str(info[4][0]) for info in infos]


resolve: Resolver = system_resolver


def is_internal(address: Address) -> bool:
    """True for every address that is not globally routable (and multicast)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


@dataclass(frozen=True)
class Target:
    """Where to connect: the URL with the checked address for host, and the original name."""

    url: str
    host: str  # the Host header (with the port when the URL names one)
    hostname: str  # for TLS: SNI and the certificate's name


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def addresses(url: str, *, allow_private: bool) -> list[Address]:
    """The URL host's addresses, all checked; raises TargetRefused or TargetUnresolved."""
    hostname = urlsplit(url).hostname or ""
    try:
        found: list[Address] = [ipaddress.ip_address(hostname)]
    except ValueError:
        found = []
        for text in resolve(hostname, _port(url)):
            try:
                found.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                continue
        if not found:
            raise TargetUnresolved(hostname) from None
    if not allow_private:
        for address in found:
            if is_internal(address):
                raise TargetRefused(hostname, str(address))
    return found


def pinned(url: str, *, allow_private: bool) -> Target:
    """The target to send to: the first checked address in place of the name."""
    parts = urlsplit(url)
    address = addresses(url, allow_private=allow_private)[0]
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    header = parts.netloc.rpartition("@")[2]
    return Target(urlunsplit(parts._replace(netloc=netloc)), header, parts.hostname or "")
