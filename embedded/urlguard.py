"""Which addresses the worker may fetch from: the guard on every URL of a job (inputs and models).

Owns: the rules. A URL's scheme is ``http``, ``https`` or ``s3``; it has a host and no user-info.
The host is resolved once (``resolve``) and every address it resolves to must be public: refused
are loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, the cloud
metadata address, fe80::/10), shared CGNAT space (100.64/10), multicast, reserved, unspecified
and every other address that is not globally routable, IPv4 addresses inside IPv6 ones included
(IPv4-mapped, 6to4, Teredo, NAT64). ``FETCH_ALLOW`` (``Allowlist``: host names, ``host:port``,
IP addresses and CIDRs, comma-separated) lets operators and tests through. The caller connects to
the address ``resolve`` returned (``fetching`` does, for every redirect too), so a second DNS
answer cannot move the connection elsewhere. ``redact`` is how a URL may appear in logs and
errors: scheme, host, port and path, never user-info or a query string (presigned signatures).

Must not import ComfyUI, the backends or an HTTP library, and never opens a connection.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

from .errors import InputError

SCHEMES = ("http", "https", "s3")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: not globally routable, though Python 3.11's tables do not say so
_UNROUTED = (ipaddress.ip_network("3fff::/20"),)  # IPv6 documentation (RFC 9637)


class FetchRefused(InputError):
    """A URL the guard refuses (its scheme, its form, or the address its host resolves to);
    ``reason`` is the rule, without the host."""

    kind = "fetch_refused"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def is_url(value: object) -> bool:
    """Whether a file is given by reference (``http://``, ``https://``, ``s3://``) rather than as data."""
    return isinstance(value, str) and value.lower().startswith(tuple(f"{s}://" for s in SCHEMES))


def redact(url: str) -> str:
    """``url`` as it may be shown: no user-info, no query string, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<an unreadable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def host_of(url: str) -> str:
    """The host (and port, when one is given) of ``url``, for error messages."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "?"


def refusal(address: IPAddress) -> str | None:
    """Why the worker must not connect to ``address``, or ``None`` for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            reason = refusal(inner)
            return f"{reason} (inside an IPv6 address)" if reason else None
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local (the cloud metadata range)", address.is_link_local),
              ("shared CGNAT space", address in _CGNAT if address.version == 4 else False),
              ("multicast", address.is_multicast), ("reserved", address.is_reserved),
              ("site-local", getattr(address, "is_site_local", False)), ("private", address.is_private),
              ("not globally routable", not address.is_global or any(address in n for n in _UNROUTED
                                                                      if n.version == address.version)))
    return next((f"a {name} address" for name, hit in checks if hit), None)


@dataclass(frozen=True)
class Allowlist:
    """``FETCH_ALLOW``: hosts (``models.internal``), ``host:port`` (``127.0.0.1:8080``,
    ``[::1]:9000``), addresses and CIDRs (``10.0.0.0/8``) the guard lets through whatever their
    address. A host or address without a port allows every port."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None, name: str = "FETCH_ALLOW") -> "Allowlist":
        hosts, networks = set(), []
        for entry in (e.strip() for e in (text or "").split(",")):
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{name}: {entry!r} is not a CIDR") from None
                continue
            try:  # a bare address (IPv6 without brackets: no port)
                hosts.add((str(ipaddress.ip_address(entry)), None))
                continue
            except ValueError:
                pass
            try:
                parts = urlsplit(f"//{entry}")
                host, port = parts.hostname, parts.port
            except ValueError:
                raise ValueError(f"{name}: {entry!r} is not a host, host:port or CIDR") from None
            if not host:
                raise ValueError(f"{name}: {entry!r} is not a host, host:port or CIDR")
            hosts.add((host.lower(), port))
        return cls(frozenset(hosts), tuple(networks))

    def with_url(self, url: str | None) -> "Allowlist":
        """This list and the host and port of ``url`` (an endpoint the operator configured)."""
        if not url:
            return self
        parts = urlsplit(url)
        if not parts.hostname:
            return self
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        return Allowlist(self.hosts | {(parts.hostname.lower(), port)}, self.networks)

    def allows(self, host: str, port: int, address: IPAddress | None = None) -> bool:
        host = host.lower()
        names = {host} | ({str(address)} if address is not None else set())
        if any((name, p) in self.hosts for name in names for p in (None, port)):
            return True
        return address is not None and any(address in net for net in self.networks)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)


Resolver = Callable[[str, int], Iterable[str]]


def _system_resolver(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass(frozen=True)
class Guard:
    """The rules with an allowlist; ``resolver`` is swapped in tests of the decision (no DNS)."""

    allow: Allowlist = field(default_factory=Allowlist)
    resolver: Resolver = _system_resolver

    def check_url(self, url: str, schemes: tuple[str, ...] = SCHEMES) -> str:
        """``url`` if its form is acceptable (scheme, host, no user-info); raises ``FetchRefused``."""
        if not isinstance(url, str):
            raise FetchRefused(f"Expected a URL string, got {type(url).__name__}")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise FetchRefused(f"{redact(url)} is not a valid URL") from None
        if parts.scheme not in schemes:
            raise FetchRefused(f"URL scheme {parts.scheme or '(none)'!r} is not allowed; use "
                               + ", ".join(f"{s}://" for s in schemes))
        if not parts.hostname:
            raise FetchRefused(f"{redact(url)} has no host")
        if parts.username is not None or parts.password is not None:
            raise FetchRefused(f"{redact(url)}: credentials in a URL are not accepted")
        return url

    def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host:port``; raises ``FetchRefused`` when ``host``
        resolves to an address the rules refuse (or not at all)."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            addresses = [literal]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
            except (OSError, UnicodeError) as exc:
                raise FetchRefused(f"Host {host} could not be resolved ({type(exc).__name__})") from None
        if not addresses:
            raise FetchRefused(f"Host {host} could not be resolved")
        for address in addresses:
            if self.allow.allows(host, port, address):
                continue
            reason = refusal(address)
            if reason:
                raise FetchRefused(f"Refused to fetch from {host}:{port}: it resolves to {reason} "
                                   f"(FETCH_ALLOW lets chosen hosts through)", f"it resolves to {reason}")
        return str(addresses[0])
