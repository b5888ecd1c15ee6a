"""Where `http_request` may connect: no loopback, private or special address unless allowed.

The check is made on the address a connection is actually opened to, inside httpx's
transport (a network backend for its connection pool): the host name is resolved once, each
address is checked, and the socket is opened to that very address, so a name that resolves
elsewhere on a second lookup (DNS rebinding) gets nowhere. `TASKS_HTTP_ALLOW` lists host
names and CIDR ranges that may be reached although they are internal.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from tasks import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_CARRIER_GRADE_NAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


class DestinationNotAllowed(PermanentError):
    """The destination is internal and not in TASKS_HTTP_ALLOW: a retry cannot help."""


def refusal_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be called by default, or None for an ordinary public address.

    IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64, 6to4) are
    judged by that IPv4 address, so `::ffff:127.0.0.1` is loopback.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return refusal_reason(embedded)
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.version == 4 and ip in _CARRIER_GRADE_NAT, "carrier-grade NAT"),
        (any(ip in net for net in _PRIVATE if net.version == ip.version), "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "special-purpose (not globally routable)"),
    )
    return next((reason for matched, reason in checks if matched), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


@dataclass(frozen=True, slots=True)
class Allowlist:
    """TASKS_HTTP_ALLOW: host names (exact, case-insensitive) and CIDR ranges."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """From the entries Settings checked: each one a CIDR range, an address or a name."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(normal_host(entry))
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, ip: IPAddress) -> bool:
        if normal_host(host) in self.names:
            return True
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)):
            candidates.append(embedded)
        return any(
            c in net for c in candidates for net in self.networks if net.version == c.version
        )

    def check(self, host: str, ip: IPAddress) -> None:
        """Raise DestinationNotAllowed unless `ip` (reached by the name `host`) may be called."""
        reason = refusal_reason(ip)
        if reason is None or self.allows(host, ip):
            return
        via = "" if normal_host(host) == str(ip) else f"{host} resolves to "
        article = "an" if reason[0] in "aeiou" else "a"
        raise DestinationNotAllowed(
            f"destination not allowed: {via}{ip}, {article} {reason} address "
            "(TASKS_HTTP_ALLOW lists the internal hosts and ranges that may be called)"
        )


def normal_host(host: str) -> str:
    """A host as compared: lower case, no trailing dot, IPv6 without brackets."""
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (an IP resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but every address is checked before it is connected to.

    All the addresses a name resolves to are checked first: one internal address refuses
    the name (a public name has no business resolving inside). Then each is tried in turn,
    by address, so the socket goes exactly where the check looked; the peer of the open
    socket is checked once more.
    """

    def __init__(self, allowlist: Allowlist, resolver: Resolver | None = None) -> None:
        self.allowlist = allowlist
        self.resolver = resolver or resolve
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        ips = [ipaddress.ip_address(address.partition("%")[0]) for address in addresses]
        for ip in ips:
            self.allowlist.check(host, ip)
        error: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address, ip in zip(addresses, ips, strict=True):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                stream = await self.inner.connect_tcp(
                    address, port, left, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            await _check_peer(stream, ip)
            return stream
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationNotAllowed("destination not allowed: a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def _check_peer(stream: httpcore.AsyncNetworkStream, expected: IPAddress) -> None:
    """The open socket's peer is the address that was checked (it was opened to it)."""
    peer = stream.get_extra_info("server_addr")
    ip = ipaddress.ip_address(str(peer[0]).partition("%")[0]) if peer else None
    if ip != expected:
        await stream.aclose()
        raise DestinationNotAllowed(f"destination not allowed: connected to {ip}, not {expected}")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's CA bundle), made once and shared."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a connection pool whose network backend is guarded.

    httpx takes no network backend, its pool (httpcore's public API) does: so the pool is
    built here the way httpx builds it, with the backend added. No proxy from the
    environment: through a proxy the address connected to would be the proxy's.
    """

    def __init__(self, allowlist: Allowlist, resolver: Resolver | None = None) -> None:
        # Not super().__init__(): it would build a second pool and SSL context, unused.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            network_backend=GuardedBackend(allowlist, resolver),
            http1=True,
            http2=False,
        )


def guarded_client(
    allowlist: Allowlist, *, timeout: float, resolver: Resolver | None = None
) -> httpx.AsyncClient:
    """An httpx client that refuses internal destinations and follows no redirect."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allowlist, resolver),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,  # no proxies, no ~/.netrc credentials for URLs a request names
    )
