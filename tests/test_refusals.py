"""Every refusal happens before the upgrade, as an HTTP status with an
OpenAI-style JSON error body."""

from __future__ import annotations

import base64
import os
import socket

import aiohttp
import pytest

from openopen8.errors import NO_CHANNEL_MESSAGE

UPGRADE = {
    "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
}


async def upgrade(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={**UPGRADE, **(headers or {})}) as resp:
            body = await resp.json(content_type=None) if resp.status != 101 else {}
            return resp.status, body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_error_shape(body: dict) -> dict:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


async def test_missing_token_is_401(gateway):
    status, body = await upgrade(gateway.url + "?model=gpt-realtime")
    assert status == 401
    assert assert_error_shape(body)["code"] == "missing_api_key"


async def test_unknown_token_is_401(gateway):
    status, body = await upgrade(gateway.url + "?model=gpt-realtime",
                                 {"Authorization": "Bearer oo8_not-a-real-token"})
    assert status == 401
    err = assert_error_shape(body)
    assert err["code"] == "invalid_api_key"
    assert "oo8_not-a-real-token" not in err["message"]


async def test_revoked_token_is_401(gateway):
    secret = await gateway.token("gone")
    await gateway.gw.store.revoke_token("gone")
    status, body = await upgrade(gateway.url + "?model=gpt-realtime",
                                 {"Authorization": f"Bearer {secret}"})
    assert status == 401
    assert assert_error_shape(body)["code"] == "token_revoked"


async def test_expired_token_is_401(gateway):
    # the CLI refuses a past expiry, so the token expires after it was made
    from datetime import datetime, timezone
    secret = await gateway.token("old", expires="2099-01-01")
    await gateway.gw.store.update_token(
        "old", {"expires_at": datetime(2020, 1, 1, tzinfo=timezone.utc)})
    status, body = await upgrade(gateway.url + "?model=gpt-realtime", {"api-key": secret})
    assert status == 401
    assert assert_error_shape(body)["code"] == "token_expired"


async def test_model_not_allowed_is_403(gateway):
    secret = await gateway.token(models=["gpt-realtime-mini"])
    status, body = await upgrade(gateway.url + "?model=gpt-realtime", {"Authorization": f"Bearer {secret}"})
    assert status == 403
    err = assert_error_shape(body)
    assert err["code"] == "model_not_allowed" and "gpt-realtime" in err["message"]


async def test_no_channel_for_model_is_404_with_the_documented_message(gateway):
    secret = await gateway.token()
    status, body = await upgrade(gateway.url + f"?model=gpt-realtime&token={secret}")
    assert status == 404
    err = assert_error_shape(body)
    assert NO_CHANNEL_MESSAGE in err["message"]
    assert "gpt-realtime" in err["message"]


async def test_only_disabled_channels_is_503(gateway):
    secret = await gateway.token()
    await gateway.channel("off", "http://127.0.0.1:9/v1", ["gpt-realtime"])
    await gateway.gw.store.set_channel_enabled("off", False)
    gateway.gw.router.invalidate()
    status, body = await upgrade(gateway.url + "?model=gpt-realtime",
                                 {"Sec-WebSocket-Protocol": f"realtime, openai-insecure-api-key.{secret}"})
    assert status == 503
    assert NO_CHANNEL_MESSAGE in assert_error_shape(body)["message"]


async def test_missing_model_is_400(gateway):
    secret = await gateway.token()
    status, body = await upgrade(gateway.url, {"Authorization": f"Bearer {secret}"})
    assert status == 400
    assert assert_error_shape(body)["code"] == "missing_model"


async def test_plain_get_without_upgrade_is_426(gateway):
    secret = await gateway.token()
    await gateway.channel("c", "http://127.0.0.1:9/v1", ["gpt-realtime"])
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "?model=gpt-realtime",
                            headers={"Authorization": f"Bearer {secret}"}) as resp:
            assert resp.status == 426
            assert (await resp.json())["error"]["code"] == "upgrade_required"


async def test_unreachable_upstreams_give_502_naming_the_class_not_the_key(gateway):
    secret = await gateway.token()
    port = free_port()
    await gateway.channel("dead", f"http://127.0.0.1:{port}/v1", ["gpt-realtime"],
                          key="sk-very-secret-upstream-key")
    status, body = await upgrade(gateway.url + "?model=gpt-realtime", {"Authorization": f"Bearer {secret}"})
    assert status == 502
    err = assert_error_shape(body)
    assert "cannot be reached" in err["message"]
    assert "sk-very-secret" not in str(body) and str(port) not in err["message"]


async def test_healthz(gateway):
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.http + "/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"


@pytest.mark.parametrize("header", ["Authorization", "api-key", "subprotocol", "query"])
async def test_every_credential_form_is_read(gateway, header):
    """A good token in each of the four places gets past auth (to the 404 of
    a model without a channel, which comes after auth)."""
    secret = await gateway.token()
    url = gateway.url + "?model=nothing-serves-this"
    headers: dict[str, str] = {}
    if header == "Authorization":
        headers["Authorization"] = f"Bearer {secret}"
    elif header == "api-key":
        headers["api-key"] = secret
    elif header == "subprotocol":
        headers["Sec-WebSocket-Protocol"] = f"realtime, openai-insecure-api-key.{secret}"
    else:
        url += f"&token={secret}"
    status, _ = await upgrade(url, headers)
    assert status == 404
