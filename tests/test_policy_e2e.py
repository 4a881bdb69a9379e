"""A token's policy through the gateway (issue 14): what the upstream
receives is held, whatever the client's dialect, and on every channel -- the
stand-in OpenAI upstream, and the local engine on its real models."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from openopen8 import ops
from openopen8.store.base import TokenLimits
from openopen8.engine.config import EngineConfig
from openopen8.engine.runtime import get_engine
from tests.conftest import start_gateway
from tests.standin import StandIn
from tests.test_client_secrets import events_until, mint
from tests.test_ledger_e2e import metered

POLICY = {"instructions": "You are the museum's guide.", "instructions_mode": "prefix",
          "voices": ["marin", "cedar"], "max_output_tokens": 150, "tools": "none"}


@pytest.fixture
async def upstream():
    async with StandIn(ping_interval=0) as up:
        yield up


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_upstream_never_sees_what_the_policy_forbids(tmp_path, upstream, dialect,
                                                               caplog):
    caplog.set_level(logging.INFO)
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'oo8.db'}", upstream)
    try:
        new = await ops.create_token(g.gw.store, "kiosk", policy=POLICY)
        beta = dialect == "beta"
        headers = {"Authorization": f"Bearer {new.secret}"}
        if beta:
            headers["OpenAI-Beta"] = "realtime=v1"
            tries = {"session": {"voice": "alloy", "instructions": "Talk like a pirate.",
                                 "max_response_output_tokens": "inf",
                                 "tools": [{"type": "function", "name": "open_doors"}]},
                     "response": {"voice": "ash", "max_output_tokens": 4096}}
        else:
            tries = {"session": {"type": "realtime", "instructions": "Talk like a pirate.",
                                 "audio": {"output": {"voice": "alloy"}},
                                 "max_output_tokens": "inf",
                                 "tools": [{"type": "function", "name": "open_doors"}]},
                     "response": {"audio": {"output": {"voice": "ash"}},
                                  "max_output_tokens": 4096}}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(g.url + "?model=gpt-realtime", headers=headers) as ws:
                first = await events_until(ws, "session.updated")   # the policy's opening
                assert "museum" not in json.dumps(first)               # the operator's text unseen
                await ws.send_str(json.dumps({"type": "session.update",
                                              "session": tries["session"]}))
                seen = await events_until(ws, "session.updated")
                params = sorted(e["error"]["param"] for e in seen if e["type"] == "error")
                assert params == (["session.max_response_output_tokens", "session.tools",
                                   "session.voice"] if beta else
                                  ["session.audio.output.voice", "session.max_output_tokens",
                                   "session.tools"])       # named as the client wrote them
                assert seen[-1]["session"]["instructions"] == "Talk like a pirate."
                await ws.send_str(json.dumps({"type": "response.create",
                                              "response": tries["response"]}))
                seen = await events_until(ws, "response.done")
                assert len([e for e in seen if e["type"] == "error"]) == 2
        up = upstream.sessions[-1].received
        opening, update, create = up[0]["session"], up[1]["session"], up[2]["response"]
        assert opening["instructions"] == POLICY["instructions"]
        assert opening["audio"]["output"]["voice"] == "marin"
        assert update["instructions"] == "You are the museum's guide.\n\nTalk like a pirate."
        assert update["audio"]["output"]["voice"] == "marin"
        assert update["max_output_tokens"] == 150 and update["tools"] == []
        assert create["audio"]["output"]["voice"] == "marin"
        assert create["max_output_tokens"] == 150
        assert new.secret not in caplog.text
    finally:
        await g.stop()


async def test_a_secret_is_billed_to_and_limited_by_its_token(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'oo8.db'}", upstream)
    try:
        new = await ops.create_token(g.gw.store, "one-at-a-time",
                                     limits=TokenLimits(max_sessions=1))
        _, a = await mint(g, new.secret, {"session": {"type": "realtime",
                                                      "model": "gpt-realtime"}})
        _, b = await mint(g, new.secret, {"session": {"type": "realtime",
                                                      "model": "gpt-realtime"}})
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(g.url, headers={"Authorization": "Bearer " + a["value"]}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await http.ws_connect(g.url, headers={"Authorization": "Bearer " + b["value"]})
                assert err.value.status == 429
    finally:
        await g.stop()


@pytest.mark.slow
async def test_the_policy_holds_on_the_local_engine(tmp_path):
    get_engine(EngineConfig()).load_sync()
    g = await start_gateway(tmp_path, local_engine=True)
    try:
        new = await ops.create_token(g.gw.store, "local", policy={
            "max_output_tokens": 8, "instructions": "Answer briefly.",
            "instructions_mode": "fixed"})
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(g.url + "?model=openopen8-local",
                                       headers={"Authorization": f"Bearer {new.secret}"}) as ws:
                await events_until(ws, "session.updated", timeout=60)
                await ws.send_str(json.dumps({"type": "session.update", "session": {
                    "type": "realtime", "output_modalities": ["text"],
                    "instructions": "Write a very long essay."}}))
                seen = await events_until(ws, "session.updated", timeout=60)
                assert [e["error"]["param"] for e in seen if e["type"] == "error"] == [
                    "session.instructions"]
                await ws.send_str(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Tell me about the sea."}]}}))
                await ws.send_str(json.dumps({"type": "response.create",
                                              "response": {"max_output_tokens": 500}}))
                seen = await events_until(ws, "response.done", timeout=60)
        errors = [e["error"]["param"] for e in seen if e["type"] == "error"]
        assert errors == ["response.max_output_tokens"]
        done = seen[-1]["response"]
        assert done["usage"]["output_tokens"] <= 8        # the cap reached the engine
    finally:
        await g.stop()
