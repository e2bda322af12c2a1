"""Which Host and Origin the API server takes, without a server (the e2e tests send them for real)."""

from __future__ import annotations

import pytest

from embedded.apiv2.access import Hosts, _same_origin, _split


@pytest.mark.parametrize("host,bound,allowed,answers", [
    ("localhost", "127.0.0.1", "", True), ("app.localhost", "127.0.0.1", "", True),
    ("127.0.0.5", "127.0.0.1", "", True), ("::1", "127.0.0.1", "", True),
    ("10.0.0.7", "127.0.0.1", "", False), ("10.0.0.7", "0.0.0.0", "", True),
    ("evil.example", "0.0.0.0", "", False), ("api.example.com", "0.0.0.0", "api.example.com", True),
    ("a.b.example.com", "0.0.0.0", ".example.com", True), ("example.com", "0.0.0.0", ".example.com", True),
    ("badexample.com", "0.0.0.0", ".example.com", False), ("anything.test", "0.0.0.0", "*", True),
    ("myhost", "myhost", "", True), ("", "127.0.0.1", "*", False),
])
def test_the_hosts_a_server_answers_to(host, bound, allowed, answers):
    assert Hosts.parse(bound, allowed).answers_to(host) is answers


def test_a_host_header_is_read_as_a_browser_writes_it():
    assert _split("LocalHost.:8189") == ("localhost", 8189)
    assert _split("[::1]:8189") == ("::1", 8189)
    for bad in ("user@evil.example", "a:b:c", "host:99999", "evil.example/x"):
        with pytest.raises(ValueError):
            _split(bad)


@pytest.mark.parametrize("origin,host,port,allowed,same", [
    ("http://127.0.0.1:8189", "127.0.0.1", 8189, "", True),
    ("http://127.0.0.1", "127.0.0.1", 8189, "", False),        # port 80: another site
    ("https://localhost", "localhost", 8189, "", False),       # port 443
    ("https://api.example.com", "127.0.0.1", 8189, "api.example.com", True),  # behind a proxy
    ("https://evil.example", "127.0.0.1", 8189, "*", False),   # * is for Host only
    ("https://api.example.com", "api.example.com", None, "", True),
    ("null", "localhost", 8189, "*", False), ("file://x", "localhost", None, "", False),
])
def test_an_origin_is_the_servers_own_or_listed_by_name(origin, host, port, allowed, same):
    assert _same_origin(origin, host, port, Hosts.parse("127.0.0.1", allowed)) is same
