"""A brake on guessing credentials, per client address.

Every failed authentication (a wrong, revoked or expired gateway token; a
wrong admin token) pours one unit into its client address's bucket, which
drains at ``limit / window`` units a second.  While a bucket holds ``limit``
units, that address's authentications are refused with 429 and a
``Retry-After`` of the time until one more attempt fits -- before any
database lookup, so guessing costs the gateway a dictionary probe, and a
sustained guesser gets ``limit`` attempts per ``window``, not thousands a
second.

Why this shape:

* **Only failures count, and only the failing address is braked.**  An
  address that never fails has no bucket; the check is one dict lookup, so
  clients that authenticate are not slowed by other addresses' guessing.
* **A success does not empty the bucket.**  It would let the holder of one
  valid token interleave guesses without end (nine wrong, one right, ...).
  Failures age out instead: a client that mistypes now and then is never
  braked.
* **A leaky bucket, not a log of timestamps**: two numbers per address, and
  no burst of 2x the limit at a window's edge as fixed windows allow.
* **Bounded memory under address churn**: at most :data:`MAX_ADDRESSES`
  buckets, the least recently failed dropped first (the oldest bucket is
  the one most drained).  An IPv6 client is braked by its /64, which one
  host or subscriber usually holds whole (per address, a /64 is 2^64
  fresh starts).
* Hand-written (~60 lines): the rate-limit libraries on PyPI keep an
  unbounded in-memory table (``limits`` expires keys with a timer thread)
  and count attempts, not failures that are known only after the lookup.

The client address is the socket's peer -- unless that peer is one of the
``trusted_proxies``: then it comes from ``X-Forwarded-For``, the right-most
address in the chain that is not itself a trusted proxy (addresses to the
left of it were written by whoever sent the request, and are not believed).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable

from ..errors import LimitError

#: buckets kept at most (~200 bytes each)
MAX_ADDRESSES = 50_000

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Brake:
    def __init__(self, limit: int, window: float, *, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: failures an address may make per ``window`` seconds; 0: no brake
        self.limit = limit
        self._rate = limit / window if limit else 0.0
        self._max = max_addresses
        self._clock = clock
        #: key -> [units in the bucket, when last poured]; least recently failed first
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def check(self, client: str) -> None:
        """Raise a 429 if ``client`` is braked (call before the lookup)."""
        if not self._buckets:
            return
        bucket = self._buckets.get(_key(client))
        if bucket is None:
            return
        level = self._level(bucket)
        if level > self.limit - 1:
            wait = max(1, math.ceil((level - (self.limit - 1)) / self._rate))
            raise LimitError(f"Too many failed authentications from this address: retry in "
                             f"{wait} s.", code="too_many_failed_authentications",
                             headers={"Retry-After": str(wait)})

    def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        if not self.limit:
            return
        key = _key(client)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.popitem(last=False)
            self._buckets[key] = [1.0, self._clock()]
            return
        bucket[0] = self._level(bucket) + 1
        bucket[1] = self._clock()
        self._buckets.move_to_end(key)

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, bucket: list[float]) -> float:
        return max(0.0, bucket[0] - (self._clock() - bucket[1]) * self._rate)


def _key(client: str) -> str:
    """The bucket of an address: itself, or an IPv6 address's /64."""
    ip = _parse(client)
    if ip is None:
        return client
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Proxies:
    """Which peers' ``X-Forwarded-For`` is believed (``trusted_proxies``)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._nets = [ipaddress.ip_network(t.strip(), strict=False) for t in trusted]

    def client(self, headers: Any, peer: str | None) -> str:
        """The client's address: ``peer`` (the socket's), or when ``peer`` is a
        trusted proxy, the right-most address of ``X-Forwarded-For`` that is
        not one.  ``headers`` is a multidict (every X-Forwarded-For line counts)."""
        ip = _parse(peer or "")
        if ip is None:
            return peer or ""
        if not self._nets or not self._trusted(ip):
            return str(ip)
        hops = [h for line in headers.getall("X-Forwarded-For", ()) for h in line.split(",")]
        client = str(ip)
        for hop in reversed(hops):
            ip = _parse(hop)
            if ip is None:
                # not an address: no trusted proxy wrote it -- the nearest
                # proxy stands for the client (a made-up value must not
                # buy a fresh bucket)
                break
            client = str(ip)
            if not self._trusted(ip):
                break
        return client

    def https(self, headers: Any, peer: str | None, secure: bool) -> bool:
        """Whether the client's request came over HTTPS: ``secure`` (this
        socket's TLS), or a trusted proxy's ``X-Forwarded-Proto: https``
        (a proxy that terminates TLS)."""
        if secure:
            return True
        ip = _parse(peer or "")
        return (ip is not None and bool(self._nets) and self._trusted(ip)
                and headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https")

    def _trusted(self, ip: _Address) -> bool:
        return any(ip in net for net in self._nets)


def _parse(text: str) -> _Address | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``,
    ``2001:db8::1``, ``[2001:db8::1]:443``; an IPv4-mapped IPv6 address as IPv4."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
