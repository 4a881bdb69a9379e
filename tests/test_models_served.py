"""What the gateway serves, said where a user looks: ``GET /v1/models`` in
OpenAI's shapes (read by the official SDK), and the Realtime 404, which keeps
the documented sentence and adds the models served now and the closest name
-- both filtered to what the token may use."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from openopen8.errors import NO_CHANNEL_MESSAGE
from openopen8.providers.routing import served_hint
from tests.conftest import start_gateway
from tests.test_refusals import assert_error_shape, upgrade

LOCAL = "openopen8-local"


@pytest.fixture
async def quick_start(tmp_path):
    """The Quick start setup: no channel, the built-in engine enabled (its
    models are not loaded here: nothing below opens a session)."""
    g = await start_gateway(tmp_path, local_engine=True)
    try:
        yield g
    finally:
        await g.stop()


async def ids(gw, token: str) -> list[str]:
    client = AsyncOpenAI(base_url=gw.base_url, api_key=token, max_retries=0)
    return [m.id for m in (await client.models.list()).data]


async def test_404_on_the_quick_start_setup_names_the_local_model(quick_start):
    token = await quick_start.token()
    status, body = await upgrade(quick_start.url + f"?model=gpt-realtime&token={token}")
    assert status == 404
    err = assert_error_shape(body)
    assert err["code"] == "model_not_found"
    assert NO_CHANNEL_MESSAGE in err["message"]                 # the seed's sentence, verbatim
    assert "(model: gpt-realtime)" in err["message"]
    assert f"Models served here: {LOCAL}." in err["message"]


async def test_404_offers_the_closest_served_name(gateway):
    token = await gateway.token()
    await gateway.channel("main", "http://127.0.0.1:9/v1", ["gpt-realtime", "gpt-realtime-mini"])
    status, body = await upgrade(gateway.url + "?model=gpt-realtme",
                                 {"Authorization": f"Bearer {token}"})
    assert status == 404
    msg = assert_error_shape(body)["message"]
    assert "Did you mean 'gpt-realtime'?" in msg
    assert "Models served here: gpt-realtime, gpt-realtime-mini." in msg


async def test_404_lists_only_what_the_token_may_use(gateway):
    token = await gateway.token(models=["gpt-realtime-mini", "gpt-realtime-typo"])
    await gateway.channel("main", "http://127.0.0.1:9/v1", ["gpt-realtime", "gpt-realtime-mini"])
    status, body = await upgrade(gateway.url + f"?model=gpt-realtime-typo&token={token}")
    assert status == 404
    msg = assert_error_shape(body)["message"]
    assert "Models served here: gpt-realtime-mini." in msg
    assert "gpt-realtime," not in msg and "gpt-realtime " not in msg


async def test_404_with_nothing_served_says_how_to_add_a_channel(gateway):
    token = await gateway.token()
    status, body = await upgrade(gateway.url + f"?model=gpt-realtime&token={token}")
    assert status == 404
    msg = assert_error_shape(body)["message"]
    assert NO_CHANNEL_MESSAGE in msg and "openopen8 channels add" in msg


async def test_503_for_disabled_channels_also_lists_what_is_served(gateway):
    token = await gateway.token()
    await gateway.channel("off", "http://127.0.0.1:9/v1", ["gpt-realtime"])
    await gateway.channel("on", "http://127.0.0.1:9/v1", ["gpt-realtime-mini"])
    await gateway.gw.store.set_channel_enabled("off", False)
    gateway.gw.router.invalidate()
    status, body = await upgrade(gateway.url + f"?model=gpt-realtime&token={token}")
    assert status == 503
    msg = assert_error_shape(body)["message"]
    assert NO_CHANNEL_MESSAGE in msg
    assert "Did you mean 'gpt-realtime-mini'?" in msg
    assert "Models served here: gpt-realtime-mini." in msg


async def test_sdk_lists_the_built_in_model_on_the_quick_start_setup(quick_start):
    token = await quick_start.token()
    client = AsyncOpenAI(base_url=quick_start.base_url, api_key=token, max_retries=0)
    page = await client.models.list()
    assert [m.id for m in page.data] == [LOCAL]
    m = page.data[0]
    assert m.object == "model" and m.owned_by == "openopen8" and isinstance(m.created, int)
    one = await client.models.retrieve(LOCAL)
    assert one.id == LOCAL and one.object == "model"


async def test_sdk_lists_enabled_channels_models_filtered_by_the_token(quick_start):
    gw = quick_start
    await gw.channel("main", "http://127.0.0.1:9/v1", ["gpt-realtime", "gpt-realtime-mini"])
    await gw.channel("eu", "https://r.openai.azure.com", ["gpt-4o-realtime-preview"], type="azure")
    await gw.channel("off", "http://127.0.0.1:9/v1", ["gpt-disabled"])
    await gw.gw.store.set_channel_enabled("off", False)
    gw.gw.router.invalidate()
    assert await ids(gw, await gw.token()) == ["gpt-4o-realtime-preview", "gpt-realtime",
                                               "gpt-realtime-mini", LOCAL]
    limited = await gw.token(models=["gpt-realtime-mini", "gpt-disabled", "not-served"])
    assert await ids(gw, limited) == ["gpt-realtime-mini"]
    client = AsyncOpenAI(base_url=gw.base_url, api_key=limited, max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:        # served, but not to this token
        await client.models.retrieve("gpt-realtime")
    assert exc.value.status_code == 404
    err = assert_error_shape({"error": exc.value.body})    # the SDK keeps the "error" object
    assert err["code"] == "model_not_found"
    assert "Models served here: gpt-realtime-mini." in err["message"]
    owners = {m.id: m.owned_by for m in (await AsyncOpenAI(
        base_url=gw.base_url, api_key=await gw.token(), max_retries=0).models.list()).data}
    assert owners["gpt-realtime"] == "openai" and owners["gpt-4o-realtime-preview"] == "azure"


async def test_sdk_retrieve_of_an_unknown_model_is_openai_s_404(gateway):
    token = await gateway.token()
    await gateway.channel("main", "http://127.0.0.1:9/v1", ["gpt-realtime"])
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        await client.models.retrieve("gpt-realtim")
    err = assert_error_shape({"error": exc.value.body})
    assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error"
    assert "Did you mean 'gpt-realtime'?" in err["message"]


async def test_models_need_a_gateway_token_read_like_realtime(gateway):
    token = await gateway.token()
    await gateway.channel("main", "http://127.0.0.1:9/v1", ["gpt-realtime"])
    client = AsyncOpenAI(base_url=gateway.base_url, api_key="oo8_not-a-real-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        await client.models.list()
    assert exc.value.status_code == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.http + "/v1/models") as resp:
            assert resp.status == 401
            body = await resp.json()
            assert assert_error_shape(body)["code"] == "missing_api_key"
        async with http.get(gateway.http + "/v1/models",
                            headers={"Authorization": "Bearer oo8_not-a-real-token"}) as resp:
            assert resp.status == 401
            body = await resp.json()
            assert assert_error_shape(body)["code"] == "invalid_api_key"
            assert "oo8_not-a-real-token" not in str(body)
        for kw in ({"headers": {"api-key": token}}, {"params": {"token": token}}):
            async with http.get(gateway.http + "/v1/models", **kw) as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["object"] == "list"
                assert [m["id"] for m in body["data"]] == ["gpt-realtime"]
        async with http.get(gateway.http + "/v1/models/gpt-realtime",
                            headers={"api-key": token}) as resp:
            assert resp.status == 200
            assert (await resp.json())["id"] == "gpt-realtime"
    await gateway.gw.store.revoke_token(
        next(t.name for t in await gateway.gw.store.list_tokens()))
    with pytest.raises(openai.AuthenticationError):
        await AsyncOpenAI(base_url=gateway.base_url, api_key=token, max_retries=0).models.list()


async def test_no_local_model_listed_when_the_engine_is_disabled(gateway):
    token = await gateway.token()
    assert await ids(gateway, token) == []


def test_a_long_list_is_cut_short_and_points_at_v1_models():
    names = [f"model-{i:02d}" for i in range(25)]
    hint = served_hint("model-1", names)
    assert "model-19" in hint and "model-20" not in hint
    assert hint.endswith(" and 5 more (GET /v1/models).")
