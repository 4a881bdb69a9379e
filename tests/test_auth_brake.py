"""The brake on guessing credentials (issue 12, defect 7): past
``auth_failure_limit`` failed authentications in a window, a client address
gets 429 with ``Retry-After`` before any token lookup, on every route that
authenticates (Realtime, the model list, the admin API); other addresses are
not slowed; ``X-Forwarded-For`` is believed only from ``trusted_proxies``.

Every test client is 127.0.0.1, so distinct clients are made the way a
reverse proxy makes them: the gateway trusts 127.0.0.1 as a proxy and the
requests carry distinct forwarded addresses (documentation ranges)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import aiohttp
import pytest

from openopen8 import peerlog
from openopen8.web.brake import Brake, Proxies
from multidict import CIMultiDict
from tests.conftest import start_gateway
from tests.standin import StandIn
from tests.test_front_door import count_lookups

LIMIT = 10          # the default auth_failure_limit


def upgrade_head(token: str, forwarded: str | None = None) -> bytes:
    lines = ["Host: 127.0.0.1", f"Authorization: Bearer {token}", "Connection: Upgrade",
             "Upgrade: websocket", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"]
    if forwarded is not None:
        lines.append(f"X-Forwarded-For: {forwarded}")
    return ("GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\n"
            + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


async def knock(port: int, token: str, forwarded: str | None = None) -> tuple[int, dict, bytes]:
    """One Realtime upgrade: (status, response headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_head(token, forwarded))
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        body = b""
        if int(lines[0].split(" ")[1]) != 101:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return int(lines[0].split(" ")[1]), headers, body
    finally:
        writer.close()


@pytest.fixture(autouse=True)
def fresh_throttle(monkeypatch):
    monkeypatch.setattr(peerlog, "THROTTLE", peerlog.Throttle())


@pytest.fixture
async def proxied(tmp_path):
    """A gateway behind a 'proxy' at 127.0.0.1, a channel, a token, and a
    count of token lookups."""
    async with StandIn(ping_interval=0) as up:
        g = await start_gateway(tmp_path, trusted_proxies=["127.0.0.1"])
        try:
            await g.channel("standin", up.base_url, ["gpt-realtime"])
            secret = await g.token()
            yield g, secret, count_lookups(g)
        finally:
            await g.stop()


async def test_wrong_tokens_from_one_address_get_429_before_any_lookup(proxied, caplog):
    caplog.set_level(logging.INFO)
    g, secret, lookups = proxied
    port = g.server.port
    answers = [await knock(port, f"oo8_guess{n}", "203.0.113.7") for n in range(3 * LIMIT)]
    assert [s for s, _, _ in answers] == [401] * LIMIT + [429] * (2 * LIMIT)
    assert len(lookups) == LIMIT                   # the braked ones cost no lookup
    status, headers, body = answers[-1]
    assert 1 <= int(headers["retry-after"]) <= 60
    assert b'"code":"too_many_failed_authentications"' in body
    assert b"retry in" in body
    # the refusal line names the address the brake used
    braked = [r.getMessage() for r in caplog.records if "refused 429" in r.getMessage()]
    assert braked and "client=203.0.113.7 " in braked[0]
    # another address is admitted meanwhile, its token looked up as ever
    status, _, _ = await knock(port, secret, "203.0.113.8")
    assert status == 101 and len(lookups) == LIMIT + 1
    # the braked address is braked whatever it sends, until its bucket drains
    status, _, _ = await knock(port, secret, "203.0.113.7")
    assert status == 429 and len(lookups) == LIMIT + 1


async def test_a_success_does_not_buy_more_guesses(proxied):
    """Interleaving a valid login does not reset the count (else the holder
    of one token could guess without end)."""
    g, secret, lookups = proxied
    port = g.server.port
    statuses = []
    for n in range(2 * LIMIT):
        if n % 3 == 0:
            assert (await knock(port, secret, "203.0.113.9"))[0] in (101, 429)
        statuses.append((await knock(port, f"oo8_guess{n}", "203.0.113.9"))[0])
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}


async def test_the_right_most_untrusted_forwarded_address_is_the_client(tmp_path):
    """Addresses left of it were written by the client: changing them buys
    no fresh bucket.  Hops in a trusted network are skipped."""
    g = await start_gateway(tmp_path, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    try:
        port = g.server.port
        statuses = [(await knock(port, "oo8_guess", f"198.18.0.{n}, 198.51.100.4, 10.1.2.3"))[0]
                    for n in range(LIMIT + 2)]
        assert statuses == [401] * LIMIT + [429] * 2
        assert (await knock(port, "oo8_guess", "198.51.100.5, 10.1.2.3"))[0] == 401
    finally:
        await g.stop()


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path):
    """No trusted_proxies: a client cannot pose as many by writing
    X-Forwarded-For -- it is braked as the socket's peer."""
    g = await start_gateway(tmp_path)
    try:
        statuses = [(await knock(g.server.port, "oo8_guess", f"203.0.113.{n}"))[0]
                    for n in range(LIMIT + 3)]
        assert statuses == [401] * LIMIT + [429] * 3
    finally:
        await g.stop()


async def test_the_model_list_shares_the_brake(proxied):
    g, secret, lookups = proxied
    for n in range(LIMIT):
        assert (await knock(g.server.port, f"oo8_guess{n}", "203.0.113.7"))[0] == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(g.http + "/v1/models", headers={
                "Authorization": "Bearer oo8_more", "X-Forwarded-For": "203.0.113.7"}) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"]["code"] == "too_many_failed_authentications"
        async with http.get(g.http + "/v1/models", headers={
                "Authorization": f"Bearer {secret}", "X-Forwarded-For": "203.0.113.8"}) as resp:
            assert resp.status == 200
    assert len(lookups) == LIMIT + 1


async def test_the_admin_api_brakes_guessing_too(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    g = await start_gateway(tmp_path, admin_token="adm-right", trusted_proxies=["127.0.0.1"])
    try:
        url = g.http + "/admin/tokens"
        async with aiohttp.ClientSession() as http:
            async def get(token: str, forwarded: str):
                async with http.get(url, headers={"Authorization": f"Bearer {token}",
                                                  "X-Forwarded-For": forwarded}) as resp:
                    return resp.status, resp.headers.get("Retry-After"), await resp.json()
            answers = [await get(f"adm-guess{n}", "203.0.113.7") for n in range(LIMIT + 5)]
            assert [s for s, _, _ in answers] == [401] * LIMIT + [429] * 5
            _, retry, body = answers[-1]
            assert int(retry) >= 1 and body["error"]["code"] == "too_many_failed_authentications"
            # even the right token waits at the braked address; another address is served
            assert (await get("adm-right", "203.0.113.7"))[0] == 429
            assert (await get("adm-right", "203.0.113.8"))[0] == 200
        lines = [r.getMessage() for r in caplog.records if r.name == "openopen8.admin"]
        assert sum("refused 401 invalid_admin_token" in m for m in lines) == LIMIT
        assert sum("refused 429 too_many_failed_authentications" in m for m in lines) == 6
        assert all("client=203.0.113.7 " in m for m in lines)
        assert not any("adm-right" in m or "adm-guess" in m for m in caplog.text.splitlines())
    finally:
        await g.stop()


async def test_a_disabled_admin_api_says_so(tmp_path):
    g = await start_gateway(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(g.http + "/admin/usage",
                                headers={"Authorization": "Bearer anything"}) as resp:
                assert resp.status == 401
                message = (await resp.json())["error"]["message"]
        assert message == ("The admin API is disabled: set admin_token (OPENOPEN8_ADMIN_TOKEN) "
                           "to enable it.")
    finally:
        await g.stop()


# ---- the brake's parts ------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def braked(brake: Brake, client: str) -> int | None:
    """Retry-After when braked, else None."""
    try:
        brake.check(client)
    except Exception as exc:                       # noqa: BLE001
        return int(exc.headers["Retry-After"])     # type: ignore[attr-defined]
    return None


def test_failures_drain_at_limit_per_window():
    clock = Clock()
    brake = Brake(10, 60, clock=clock)
    for _ in range(10):
        assert braked(brake, "192.0.2.1") is None
        brake.failed("192.0.2.1")
    assert braked(brake, "192.0.2.1") == 6          # one more try fits in 60/10 s
    clock.now += 6
    assert braked(brake, "192.0.2.1") is None
    brake.failed("192.0.2.1")
    assert braked(brake, "192.0.2.1") == 6          # a sustained guesser: 10 a minute
    assert braked(brake, "192.0.2.2") is None


def test_the_table_stays_bounded_under_address_churn():
    brake = Brake(10, 60, max_addresses=100, clock=Clock())
    for n in range(10_000):
        brake.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(brake) == 100


def test_an_ipv6_client_is_braked_by_its_64():
    brake = Brake(3, 60, clock=Clock())
    for n in range(3):
        brake.failed(f"2001:db8:1:2::{n + 1}")
    assert braked(brake, "2001:db8:1:2:ffff::9") is not None
    assert braked(brake, "2001:db8:1:3::1") is None


def test_a_zero_limit_is_no_brake():
    brake = Brake(0, 60, clock=Clock())
    for _ in range(100):
        brake.failed("192.0.2.1")
    assert braked(brake, "192.0.2.1") is None


@pytest.mark.parametrize("peer, forwarded, client", [
    ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
    ("127.0.0.1", ["203.0.113.5:4711"], "203.0.113.5"),
    ("127.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
    ("127.0.0.1", ["1.1.1.1, 203.0.113.5", "10.0.0.2"], "203.0.113.5"),   # two header lines
    ("127.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),       # all proxies: the left-most
    ("127.0.0.1", ["not-an-address"], "127.0.0.1"),          # made up: the proxy stands in
    ("127.0.0.1", ["203.0.113.5, unknown"], "127.0.0.1"),
    ("127.0.0.1", [], "127.0.0.1"),
    ("192.0.2.9", ["203.0.113.5"], "192.0.2.9"),             # not a trusted proxy
    ("::ffff:127.0.0.1", ["203.0.113.5"], "203.0.113.5"),    # IPv4-mapped peer
])
def test_the_client_address_behind_trusted_proxies(peer, forwarded, client):
    headers = CIMultiDict([("X-Forwarded-For", v) for v in forwarded])
    assert Proxies(["127.0.0.1", "10.0.0.0/8"]).client(headers, peer) == client
