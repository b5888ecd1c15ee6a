"""Which addresses `http_request` refuses, and TASKS_HTTP_ALLOW, without touching the network.

The end-to-end checks (a local server that counts hits) are in tests/test_http_request.py;
here only the classification and the allowlist, so that no test ever sends a packet to a
private or public address.
"""

from __future__ import annotations

import ipaddress

import pytest

from tasks.destinations import Allowlist, DestinationNotAllowed, refusal_reason
from tasks_service.config import Settings, SettingsError


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
        ("192.0.2.1", "special-purpose (not globally routable)"),
        ("198.18.0.1", "special-purpose (not globally routable)"),
        ("2001:db8::1", "special-purpose (not globally routable)"),
        # IPv6 forms that carry an IPv4 address are judged by it.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        # Public addresses pass.
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("93.184.215.14", None),
        ("::ffff:8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refusal_reasons(address: str, reason: str | None) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


def test_nothing_is_allowed_by_default() -> None:
    allowlist = Allowlist.parse(())
    with pytest.raises(DestinationNotAllowed, match=r"127\.0\.0\.1, a loopback address"):
        allowlist.check("127.0.0.1", ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(DestinationNotAllowed, match=r"metadata\.internal resolves to 169\.254"):
        allowlist.check("metadata.internal", ipaddress.ip_address("169.254.169.254"))
    allowlist.check("example.org", ipaddress.ip_address("93.184.215.14"))


def test_the_allowlist_takes_ranges_and_names() -> None:
    allowlist = Allowlist.parse(Settings.from_env({"TASKS_HTTP_ALLOW": _ALLOW}).http_allow)
    ip = ipaddress.ip_address
    assert allowlist.allows("10.1.2.3", ip("10.1.2.3"))
    assert allowlist.allows("127.0.0.1", ip("127.0.0.1"))
    assert allowlist.allows("::ffff:127.0.0.1", ip("::ffff:127.0.0.1"))  # the same address
    assert not allowlist.allows("127.0.0.2", ip("127.0.0.2"))
    assert not allowlist.allows("192.168.0.1", ip("192.168.0.1"))
    assert allowlist.allows("Hooks.Internal.", ip("192.168.7.7"))  # any address of the name
    assert not allowlist.allows("other.internal", ip("192.168.7.7"))
    assert allowlist.allows("fd00::5", ip("fd00::5"))
    allowlist.check("hooks.internal", ip("192.168.7.7"))


_ALLOW = " 10.0.0.0/8, 127.0.0.1/32 ,HOOKS.internal,fd00::/8,,"


def test_settings_normalise_the_allowlist() -> None:
    settings = Settings.from_env({"TASKS_HTTP_ALLOW": _ALLOW + ",192.168.1.1,::1"})
    assert settings.http_allow == (
        "10.0.0.0/8",
        "127.0.0.1/32",
        "hooks.internal",
        "fd00::/8",
        "192.168.1.1/32",
        "::1/128",
    )
    assert Settings.from_env({}).http_allow == ()


@pytest.mark.parametrize(
    "entry", ["127.1", "10.0.0.0/33", "http://hooks.internal", "a b", "-x.org", "x/8", "*.internal"]
)
def test_a_bad_allowlist_entry_is_a_settings_error(entry: str) -> None:
    with pytest.raises(SettingsError, match="TASKS_HTTP_ALLOW") as caught:
        Settings.from_env({"TASKS_HTTP_ALLOW": f"10.0.0.0/8,{entry}"})
    assert repr(entry) in str(caught.value) and "CIDR" in str(caught.value)
