"""The URL guard's decisions, tested without connecting anywhere: which addresses are refused,
how FETCH_ALLOW lets chosen ones through, which URL forms are accepted, and what may be shown."""

import ipaddress
import re

import pytest

from embedded.staging.guard import GLOBAL_WITHIN, NOT_GLOBAL, Allowlist, FetchRefused, Guard, redact, refusal

REFUSED = {
    "127.0.0.1": "loopback", "127.8.9.10": "loopback", "10.1.2.3": "private", "172.16.0.1": "private",
    "192.168.1.1": "private", "169.254.169.254": "link-local", "169.254.0.1": "link-local",
    "100.64.0.1": "CGNAT", "100.127.255.254": "CGNAT", "224.0.0.1": "multicast", "239.255.255.250": "multicast",
    "0.0.0.0": "unspecified", "240.0.0.1": "reserved", "255.255.255.255": "",
    "192.0.2.10": "", "198.18.0.1": "",  # documentation and benchmarking ranges: not routable
    "::1": "loopback", "::": "unspecified", "fc00::1": "private", "fd12:3456::1": "private",
    "fe80::1": "link-local", "ff02::1": "multicast",
    "::ffff:127.0.0.1": "loopback", "::ffff:169.254.169.254": "link-local", "::ffff:10.0.0.1": "private",
    "2002:7f00:1::": "loopback",           # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::": "link-local",      # 6to4 of the metadata address
    "64:ff9b::a9fe:a9fe": "link-local",    # NAT64 of the metadata address
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "private",  # Teredo whose client is 10.0.0.1
    "fec0::1": "site-local", "3fff::1": "documentation", "2001:db8::1": "documentation",
    "192.0.0.8": "IETF protocol assignment", "4000::1": "global unicast space",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "151.101.1.69", "2606:4700::6810:84e5", "2a00:1450:4001:80b::200e",
          "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address,kind", REFUSED.items())
def test_every_non_public_address_is_refused_with_its_reason(address, kind):
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert kind.lower() in reason.lower()


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("block,name", [(str(b), n) for b, n in NOT_GLOBAL], ids=lambda v: str(v))
def test_every_block_iana_marks_not_globally_reachable_is_refused_first_to_last(block, name):
    """The guard's own table (issue 18, item 3), the same on every Python version."""
    network = ipaddress.ip_network(block)
    for address in (network.network_address, network.broadcast_address, network.network_address + network.num_addresses // 2):
        if any(address in inner for inner, _ in GLOBAL_WITHIN):
            continue
        reason = refusal(address)
        inner = address.ipv4_mapped or (address.teredo or (None, None))[1] if address.version == 6 else None
        if inner is not None:  # an IPv4 address inside an IPv6 one is judged as that IPv4 address
            assert (reason is None) == (refusal(inner) is None), (address, reason)
            continue
        most_specific = max((b.prefixlen, n) for b, n in NOT_GLOBAL if b.version == address.version and address in b)[1]
        assert reason is not None and most_specific in reason, (address, reason)


@pytest.mark.parametrize("block", [str(b) for b, _ in GLOBAL_WITHIN])
def test_the_globally_reachable_blocks_inside_them_pass(block):
    network = ipaddress.ip_network(block)
    assert refusal(network.network_address) is None and refusal(network.broadcast_address) is None


@pytest.mark.parametrize("entry,says", [("http://models.internal", "has a scheme; give the host alone (models.internal)"),
                                        ("https://10.0.0.5:8443/models", "has a scheme"),
                                        ("models.internal/path", "without a path")])
def test_fetch_allow_entries_with_a_scheme_or_a_path_say_what_form_is_expected(entry, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        Allowlist.parse(entry)


def resolving(table):
    """A resolver from a table (host -> addresses): the decision is tested without DNS."""
    return lambda host, port: table[host]


def test_a_host_that_resolves_to_the_metadata_address_is_refused():
    guard = Guard(resolver=resolving({"metadata.example": ["169.254.169.254"]}))
    with pytest.raises(FetchRefused, match="link-local"):
        guard.resolve("metadata.example", 80)


def test_a_host_with_one_private_address_among_public_ones_is_refused():
    guard = Guard(resolver=resolving({"mixed.example": ["93.184.216.34", "10.0.0.5"]}))
    with pytest.raises(FetchRefused, match="private"):
        guard.resolve("mixed.example", 443)


def test_the_address_returned_is_the_one_that_was_checked():
    guard = Guard(resolver=resolving({"cdn.example": ["93.184.216.34", "93.184.216.35"]}))
    assert guard.resolve("cdn.example", 443) == "93.184.216.34"


def test_a_literal_address_is_decided_without_resolving():
    guard = Guard(resolver=lambda host, port: pytest.fail("resolved a literal address"))
    with pytest.raises(FetchRefused):
        guard.resolve("127.0.0.1", 80)
    with pytest.raises(FetchRefused):
        guard.resolve("[::1]", 80)
    assert guard.resolve("8.8.8.8", 443) == "8.8.8.8"


def test_an_unresolvable_host_is_refused_by_name():
    def fail(host, port):
        raise OSError("no such host")
    with pytest.raises(FetchRefused, match="nowhere.invalid could not be resolved"):
        Guard(resolver=fail).resolve("nowhere.invalid", 80)


def test_fetch_allow_host_port_lets_only_that_port_through():
    guard = Guard(Allowlist.parse("127.0.0.1:8080"))
    assert guard.resolve("127.0.0.1", 8080) == "127.0.0.1"
    with pytest.raises(FetchRefused):
        guard.resolve("127.0.0.1", 8081)


def test_fetch_allow_cidr_and_host_names():
    guard = Guard(Allowlist.parse("10.0.0.0/8, models.internal, [::1]:9000, fd00::7"),
                  resolver=resolving({"models.internal": ["192.168.7.7"], "other.internal": ["192.168.7.8"]}))
    assert guard.resolve("10.20.30.40", 80) == "10.20.30.40"
    assert guard.resolve("models.internal", 8443) == "192.168.7.7"
    assert guard.resolve("[::1]", 9000) == "::1"
    assert guard.resolve("fd00::7", 443) == "fd00::7"
    with pytest.raises(FetchRefused):
        guard.resolve("other.internal", 80)
    with pytest.raises(FetchRefused):
        guard.resolve("172.16.0.1", 80)


def test_the_configured_bucket_endpoint_is_allowed_on_its_port_only():
    allow = Allowlist().with_url("http://127.0.0.1:8333")
    assert allow.allows("127.0.0.1", 8333, ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows("127.0.0.1", 8334, ipaddress.ip_address("127.0.0.1"))
    assert Allowlist().with_url("https://minio.internal").allows("minio.internal", 443)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:port", ":80", "a/b/c"])
def test_a_malformed_fetch_allow_entry_is_a_configuration_error(entry):
    with pytest.raises(ValueError, match="FETCH_ALLOW"):
        Allowlist.parse(entry)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/",
                                 "example.com/a.png", "data:image/png;base64,AAAA", "jar:http://x/!a"])
def test_only_http_https_and_s3_schemes_are_accepted(url):
    with pytest.raises(FetchRefused, match="scheme"):
        Guard().check_url(url)


def test_credentials_in_a_url_are_refused_and_not_repeated():
    with pytest.raises(FetchRefused) as refused:
        Guard().check_url("https://user:hunter22@example.com/a.png")
    assert "hunter22" not in str(refused.value) and "user" not in str(refused.value)


def test_redact_keeps_host_port_and_path_and_drops_user_info_query_and_fragment():
    url = "https://key:secret@bucket.example.com:8443/in/a.png?X-Amz-Signature=abcdef&token=t0k#frag"
    assert redact(url) == "https://bucket.example.com:8443/in/a.png"
    assert redact("https://[2606:4700::1]/x") == "https://[2606:4700::1]/x"
