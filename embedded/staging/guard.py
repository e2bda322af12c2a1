"""Which addresses the worker may fetch from: the guard on every URL of a job (inputs and models).

Owns: the rules. A URL's scheme is ``http``, ``https`` or ``s3``; it has a host and no user-info.
The host is resolved once (``resolve``) and every address it resolves to must be public: refused
is every block IANA's special-purpose registries mark not globally reachable (``NOT_GLOBAL``, a
table of ours, the same on every Python version: loopback, private, link-local and the cloud
metadata address, shared CGNAT space, documentation, benchmarking, IETF protocol assignments...),
multicast, reserved, IPv6 outside the global unicast space, and IPv4 addresses inside IPv6 ones
(IPv4-mapped, 6to4, Teredo, NAT64) as those IPv4 addresses. ``FETCH_ALLOW`` (``Allowlist``: host names, ``host:port``,
IP addresses and CIDRs, comma-separated) lets operators and tests through. The caller connects to
the address ``resolve`` returned (``downloads`` does, for every redirect too), so a second DNS
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

from ..job.errors import InputError

SCHEMES = ("http", "https", "s3")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _table(*rows: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(block), name) for block, name in rows)


#: IANA's IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and their updates): every
#: block whose "Globally Reachable" is False (or that is deprecated), with its registry name. Ours,
#: so that the guard refuses the same addresses on every Python version (``ipaddress``' own tables
#: differ between versions: 3.11 lets 192.0.0.8 through, for one).
NOT_GLOBAL = _table(
    ("0.0.0.0/32", "unspecified"), ("0.0.0.0/8", "'this network'"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared CGNAT space"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local (the cloud metadata range)"),
    ("172.16.0.0/12", "private"), ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"), ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"), ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"), ("255.255.255.255/32", "limited broadcast"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("::ffff:0:0/96", "IPv4-mapped"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"), ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"), ("2001::/23", "IETF protocol assignment"),
    ("2001:2::/48", "benchmarking"), ("2001:10::/28", "deprecated ORCHID"), ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"), ("5f00::/16", "segment routing (SRv6) SID"), ("fc00::/7", "private (unique-local)"),
    ("fe80::/10", "link-local"), ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
)
#: blocks inside those that the registries mark globally reachable (anycast services, AMT, AS112...)
GLOBAL_WITHIN = _table(
    ("192.0.0.9/32", "PCP anycast"), ("192.0.0.10/32", "TURN anycast"),
    ("2001:1::1/128", "PCP anycast"), ("2001:1::2/128", "TURN anycast"), ("2001:1::3/128", "DNS-SD SRP anycast"),
    ("2001:3::/32", "AMT"), ("2001:4:112::/48", "AS112-v6"), ("2001:20::/28", "ORCHIDv2"),
    ("2001:30::/28", "drone remote ID"),
)
#: IANA's IPv6 global unicast space: every IPv6 address outside it is unallocated or special
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")


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
    """Why the worker must not connect to ``address``, or ``None`` for a public address (the tables
    above; an IPv4 address inside an IPv6 one, IPv4-mapped, 6to4, Teredo or NAT64, is judged as
    that IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            reason = refusal(inner)
            return f"{reason} (inside an IPv6 address)" if reason else None
    if any(address in block for block, _ in GLOBAL_WITHIN if block.version == address.version):
        return None
    hits = [(block.prefixlen, name) for block, name in NOT_GLOBAL if block.version == address.version and address in block]
    if hits:
        name = max(hits)[1]  # the most specific block names it
        return f"a{'n' if name[0] in 'aeiouIR' else ''} {name} address"
    if address.version == 6 and address not in GLOBAL_UNICAST_V6:
        return "an address outside IANA's global unicast space (not globally routable)"
    return None


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
            if "://" in entry:
                raise ValueError(f"{name}: {entry!r} has a scheme; give the host alone "
                                 f"({urlsplit(entry).netloc or 'models.internal'}), host:port or a CIDR")
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{name}: {entry!r} is neither a CIDR (10.0.0.0/8, fd00::/8) nor a host: "
                                     f"give a host, host:port or CIDR, without a path") from None
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
