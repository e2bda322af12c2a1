"""Who may talk to the server: a client with the token, and no web page of another site.

Owns two middlewares, on every route but ``/api/v2/health`` (an orchestrator probes it with any
``Host`` and no token):

- ``same_site``: what ComfyUI's own server refuses (``create_origin_only_middleware``), and more.
  A browser lets any page send a "simple" request (a ``text/plain`` ``POST``, no preflight) to a
  server on loopback, and a page of a name that resolves to 127.0.0.1 (DNS rebinding) can even
  read the answers. So: a ``Host`` that is not one this server answers to (a loopback name or
  address, the address it is bound to, any address when bound to all of them, or a name in
  ``SERVE_ALLOWED_HOSTS``) is 403 ``host_not_allowed``; a request a browser marks
  ``Sec-Fetch-Site: cross-site``, or whose ``Origin`` is not the ``Host`` (its port compared when
  the ``Host`` gives one, the scheme's default when the ``Origin`` gives none) and not a listed
  name either, is 403 ``cross_site_refused``.
  Clients that are not browsers send no ``Origin``: they are not affected.
- ``bearer``: with a token, ``Authorization: Bearer <token>``; a missing, malformed or wrong one
  (also one that is not UTF-8) is 401 ``unauthorized`` with ``WWW-Authenticate`` (RFC 6750:
  ``error="invalid_token"`` for a wrong one). 403 stays for what a valid token may not do.

``SERVE_ALLOWED_HOSTS``: comma-separated names (``api.example.com``), ``.example.com`` for a
domain and its sub-domains, or ``*`` for any ``Host`` (behind a proxy that checks it itself; a
page's ``Origin`` is never let in by ``*``, only by a listed name).
Must not import the backends or ComfyUI.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from .wire import ApiError

PREFIX = "/api/v2"
HEALTH = f"{PREFIX}/health"
REALM = 'Bearer realm="comfy-api-v2"'


@dataclass(frozen=True)
class Hosts:
    """The ``Host`` names and addresses this server answers to."""

    #: the address or name it listens on (``--host``)
    bound: str
    #: ``SERVE_ALLOWED_HOSTS``: exact names, ``.domain`` suffixes, or ``*``
    allowed: tuple[str, ...] = ()

    @classmethod
    def parse(cls, bound: str, text: str | None) -> "Hosts":
        entries = tuple(e.strip().lower().rstrip(".") for e in (text or "").split(",") if e.strip())
        return cls(bound.strip().lower(), entries)

    def listed(self, name: str, wildcard: bool = True) -> bool:
        """Whether ``SERVE_ALLOWED_HOSTS`` names ``name`` (with ``wildcard``, ``*`` names any)."""
        return any((e == "*" and wildcard) or name == e or (e.startswith(".") and (name.endswith(e) or name == e[1:]))
                   for e in self.allowed)

    def answers_to(self, name: str) -> bool:
        if not name:
            return False
        if name == "localhost" or name.endswith(".localhost") or name == self.bound or self.listed(name):
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False  # a name nobody allowed: what DNS rebinding sends
        return address.is_loopback or _wildcard(self.bound)


def _wildcard(bound: str) -> bool:
    return bound in ("", "0.0.0.0", "::")


def _split(netloc: str) -> tuple[str, int | None]:
    """``host[:port]`` as (the lower-case host name without brackets, the port or None); raises
    ValueError when it is not one."""
    parts = urlsplit("//" + netloc)
    host, port = parts.hostname, parts.port  # .port raises ValueError on a bad one
    if not host or parts.username is not None or parts.path or parts.query:
        raise ValueError(netloc)
    return host.rstrip("."), port


def same_site(hosts: Hosts):
    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path == HEALTH:
            return await handler(request)
        try:
            host, port = _split(request.headers.get("Host", ""))
        except ValueError:
            host, port = "", None
        if not hosts.answers_to(host):
            raise ApiError(403, "host_not_allowed", f"This server does not answer to the host {host or '(none)'!r}: "
                                                    "add it to SERVE_ALLOWED_HOSTS if it is this server's name")
        origin = request.headers.get("Origin")
        if request.headers.get("Sec-Fetch-Site") == "cross-site" or (origin is not None
                                                                     and not _same_origin(origin, host, port, hosts)):
            raise ApiError(403, "cross_site_refused", "A web page of another site may not use this server (its "
                                                      "Origin is not this server's host)")
        return await handler(request)

    return middleware


def _same_origin(origin: str, host: str, port: int | None, hosts: Hosts) -> bool:
    """Whether a page of ``origin`` is this server's own: the ``Host``'s name (and its port, when
    the ``Host`` gives one: behind a proxy the scheme is not known here), or a name
    ``SERVE_ALLOWED_HOSTS`` lists by name (its ``*`` is for ``Host`` only: it lets no page in)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https"):
        return False  # "null" (a sandboxed frame, a file), or nothing a browser sends
    try:
        origin_host, origin_port = _split(parts.netloc)
    except ValueError:
        return False
    if hosts.listed(origin_host, wildcard=False):
        return True
    if origin_host != host:
        return False
    return port is None or (origin_port or {"http": 80, "https": 443}[parts.scheme]) == port


def bearer(token: str):
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path.startswith(PREFIX) and request.path != HEALTH:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                raise ApiError(401, "unauthorized", "This server needs 'Authorization: Bearer <token>'",
                               headers={"WWW-Authenticate": REALM})
            # aiohttp keeps bytes that are not UTF-8 as surrogates: compared as the bytes sent
            if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected):
                raise ApiError(401, "unauthorized", "The token is not this server's",
                               headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        return await handler(request)

    return middleware
