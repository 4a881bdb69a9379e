"""Azure channels: the GA /openai/v1 endpoint and the preview endpoint, which
speaks the beta dialect, behind a GA client."""

from __future__ import annotations

import asyncio
import base64

from openai import AsyncOpenAI

from tests.standin import Script, StandIn


async def run_text_and_audio_turn(gateway, token):
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=token)
    kinds = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Hi",
                                           "audio": {"output": {"voice": "marin"}}})
        await conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]})
        await conn.response.create()
        audio = 0
        while True:
            ev = await asyncio.wait_for(conn.recv(), 5)
            kinds.append(ev.type)
            if ev.type == "response.output_audio.delta":
                audio += len(base64.b64decode(ev.delta))
            if ev.type == "response.done":
                return kinds, audio, ev


async def test_azure_ga_channel_uses_the_v1_path_the_deployment_and_api_key(gateway):
    async with StandIn(models={"rt-deployment"}) as up:
        await gateway.channel("az", up.azure_endpoint, ["gpt-realtime"], type="azure",
                              key="sk-good", deployments={"gpt-realtime": "rt-deployment"})
        token = await gateway.token()
        kinds, audio, done = await run_text_and_audio_turn(gateway, token)
        s = up.sessions[-1]
        assert s.path == "/openai/v1/realtime" and s.query.get("model") == "rt-deployment"
        assert "api-version" not in s.query
        assert s.headers.get("api-key") == "sk-good" and "Authorization" not in s.headers
        assert audio > 0 and done.response.status == "completed"


async def test_azure_preview_channel_is_spoken_to_in_beta_behind_a_ga_client(gateway):
    async with StandIn(models={"old-dep"}) as up:
        up.scripts.append(Script(text="Bonjour.", audio_deltas=2))
        await gateway.channel("az-preview", up.azure_endpoint, ["gpt-realtime"], type="azure",
                              key="sk-good", deployments={"gpt-realtime": "old-dep"},
                              api_version="2025-04-01-preview")
        token = await gateway.token()
        kinds, audio, done = await run_text_and_audio_turn(gateway, token)
        s = up.sessions[-1]
        assert s.path == "/openai/realtime"
        assert s.query.get("api-version") == "2025-04-01-preview" and s.query.get("deployment") == "old-dep"
        # the upstream received beta; the GA client heard GA
        upd = next(e for e in s.received if e["type"] == "session.update")
        assert "type" not in upd["session"] and upd["session"].get("voice") == "marin"
        assert "response.output_audio.delta" in kinds and "conversation.item.added" in kinds
        assert not [k for k in kinds if k.startswith(("response.audio", "conversation.item.created"))]
        assert audio > 0 and done.response.output[0].content[0].transcript == "Bonjour."
