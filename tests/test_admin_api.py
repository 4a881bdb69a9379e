"""The admin API, endpoint by endpoint, over real HTTP on loopback: tokens,
channels (with a real handshake to the stand-in upstream), sessions live and
past (one ended through the API), usage as JSON and CSV, the OpenAPI
document; auth failures and validation errors (400 naming the field)."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import aiohttp
import pytest
import websockets

from tests.conftest import start_gateway
from tests.standin import StandIn

ADMIN = "adm-console-1"
H = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def env(tmp_path):
    async with StandIn() as up:
        g = await start_gateway(tmp_path, admin_token=ADMIN, balance_refresh_seconds=0.2,
                                tick_seconds=0.1)
        try:
            async with aiohttp.ClientSession(g.http, headers=H) as http:
                yield g, up, http
        finally:
            await g.stop()


async def call(http, method, path, body=None, **kw):
    async with http.request(method, path, json=body, **kw) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def test_tokens_crud_with_validation_errors(env, caplog):
    g, up, http = env
    caplog.set_level("INFO", logger="openopen8.admin")
    st, body = await call(http, "POST", "/admin/tokens", {
        "name": "alice", "models": ["gpt-realtime"], "quota_usd": "2.5", "max_sessions": 3,
        "origins": ["https://app.example"], "log_transcripts": True})
    assert st == 201, body
    secret = body["secret"]
    assert secret.startswith("oo8_") or len(secret) > 20
    assert body["quota_usd"] == "2.5" and body["max_sessions"] == 3
    assert body["origins"] == ["https://app.example"] and body["log_transcripts"] is True
    st, rows = await call(http, "GET", "/admin/tokens")
    assert st == 200 and [r["name"] for r in rows] == ["alice"]
    assert secret not in json.dumps(rows) and "secret" not in rows[0]
    assert rows[0]["last_used_at"] is None and rows[0]["spent_usd"] == "0"
    # validation: 400 naming the field
    for bad, field in (({"name": "x", "quota_usd": "lots"}, "quota_usd"),
                       ({"name": "x", "max_sessions": 1.5}, "max_sessions"),
                       ({"name": "x", "colour": "red"}, "colour"),
                       ({"models": []}, "name"),
                       ({"name": "x", "origins": "https://a"}, "origins"),
                       ({"name": "x", "expires": "2020-01-01"}, "expires"),
                       ({"name": "x", "policy": {"voices": "marin"}}, "policy.voices"),
                       ({"name": "x", "policy": {"colour": 1}}, "policy.colour"),
                       ({"name": "x", "origins": ["not an origin"]}, "origins")):
        st, err = await call(http, "POST", "/admin/tokens", bad)
        assert st == 400 and err["error"]["param"] == field, (bad, err)
    st, err = await call(http, "POST", "/admin/tokens", {"name": "alice"})
    assert st == 409 and err["error"]["code"] == "already_exists"
    async with http.post("/admin/tokens", data=b"{nope",
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
    st, body = await call(http, "PATCH", "/admin/tokens/alice",
                          {"quota_usd": "none", "max_sessions": 5, "models": [],
                           "policy": {"instructions": "Be brief."}})
    assert st == 200 and body["quota_usd"] is None and body["max_sessions"] == 5
    assert body["models"] == [] and body["policy"].get("instructions") == "Be brief."
    st, body = await call(http, "PATCH", "/admin/tokens/alice", {"policy": {"voices": ["marin"]}})
    assert body["policy"]["voices"] == ["marin"] and body["policy"]["instructions"] == "Be brief."
    st, body = await call(http, "PATCH", "/admin/tokens/alice", {"clear_policy": True})
    assert st == 200 and body["policy"] == {}
    st, err = await call(http, "PATCH", "/admin/tokens/alice", {"policy": {"tools": 5}})
    assert st == 400 and err["error"]["param"] == "policy.tools"
    st, err = await call(http, "PATCH", "/admin/tokens/alice", {"idle_timeout": 0})
    assert st == 400 and err["error"]["param"] == "idle_timeout"
    st, err = await call(http, "PATCH", "/admin/tokens/nobody", {"max_sessions": 1})
    assert st == 404
    st, one = await call(http, "GET", "/admin/tokens/alice")
    assert st == 200 and one["max_sessions"] == 5
    st, body = await call(http, "POST", "/admin/tokens/alice/revoke")
    assert st == 200 and body["revoked"] is True
    st, body = await call(http, "DELETE", "/admin/tokens/alice")
    assert st == 200
    assert (await call(http, "GET", "/admin/tokens"))[1] == []
    assert (await call(http, "DELETE", "/admin/tokens/alice"))[0] == 404
    # every change is one audit line, never a secret
    lines = [r.getMessage() for r in caplog.records if r.name == "openopen8.admin"]
    assert "admin POST /admin/tokens -> 201 client=127.0.0.1 via=admin_token" in lines
    assert "admin DELETE /admin/tokens/alice -> 200 client=127.0.0.1 via=admin_token" in lines
    assert not any(secret in m or ADMIN in m for m in lines)


async def test_channels_crud_and_real_handshake_tests(env):
    g, up, http = env
    st, body = await call(http, "POST", "/admin/channels", {
        "name": "standin", "type": "openai", "base_url": up.base_url, "key": "sk-good",
        "models": ["gpt-realtime"], "priority": 5})
    assert st == 201 and body["priority"] == 5 and "key" not in body
    st, rows = await call(http, "GET", "/admin/channels")
    assert "sk-good" not in json.dumps(rows) and rows[0]["name"] == "standin"
    st, res = await call(http, "POST", "/admin/channels/standin/test")
    assert st == 200 and res["ok"] is True and res["event"] == "session.created"
    assert res["seconds"] >= 0
    # a wrong key: the failure class, from a real handshake
    st, _ = await call(http, "PATCH", "/admin/channels/standin", {"key": "sk-bad", "weight": 3})
    st, res = await call(http, "POST", "/admin/channels/standin/test", {})
    assert st == 200 and res["ok"] is False and res["kind"] == "auth", res
    st, body = await call(http, "PATCH", "/admin/channels/standin", {"key": "sk-good"})
    assert st == 200 and body["weight"] == 3
    assert (await call(http, "POST", "/admin/channels/standin/test"))[1]["ok"] is True
    # nothing listens here: unreachable
    await call(http, "POST", "/admin/channels", {
        "name": "dead", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "key": "k",
        "models": ["gpt-realtime"]})
    st, res = await call(http, "POST", "/admin/channels/dead/test")
    assert res["ok"] is False and res["kind"] == "unreachable"
    st, body = await call(http, "POST", "/admin/channels/dead/disable")
    assert st == 200 and body["enabled"] is False
    st, body = await call(http, "POST", "/admin/channels/dead/enable")
    assert body["enabled"] is True
    assert (await call(http, "DELETE", "/admin/channels/dead"))[0] == 200
    assert (await call(http, "POST", "/admin/channels/dead/test"))[0] == 404
    for bad, field in (({"name": "x", "type": "gcp", "models": ["m"]}, "type"),
                       ({"name": "x", "type": "openai", "models": []}, "models"),
                       ({"name": "x", "type": "openai", "models": ["m"]}, "key"),
                       ({"name": "x", "type": "openai", "models": ["m"], "key": "k",
                         "weight": 0}, "weight")):
        st, err = await call(http, "POST", "/admin/channels", bad)
        assert st == 400 and err["error"]["param"] == field, (bad, err)
    st, err = await call(http, "PATCH", "/admin/channels/standin", {"priority": "high"})
    assert st == 400 and err["error"]["param"] == "priority"
    st, err = await call(http, "PATCH", "/admin/channels/nope", {"priority": 1})
    assert st == 404


async def test_sessions_live_past_and_ended_through_the_api(env):
    g, up, http = env
    await call(http, "POST", "/admin/channels", {
        "name": "standin", "type": "openai", "base_url": up.base_url, "key": "sk-good",
        "models": ["gpt-realtime"]})
    st, tok = await call(http, "POST", "/admin/tokens", {"name": "bob"})
    async with websockets.connect(g.url + "?model=gpt-realtime", additional_headers={
            "Authorization": f"Bearer {tok['secret']}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "response.create"}))
        while json.loads(await ws.recv())["type"] != "response.done":
            pass
        st, live = await call(http, "GET", "/admin/sessions/live")
        assert st == 200 and len(live) == 1
        s = live[0]
        assert (s["token"], s["model"], s["channel"], s["client"]) == (
            "bob", "gpt-realtime", "standin", "127.0.0.1")
        assert s["events_in"] >= 1 and s["events_out"] >= 3 and s["audio_out_seconds"] > 0
        st, page = await call(http, "GET", "/admin/sessions", params={"state": "open"})
        assert page["total"] == 1 and page["sessions"][0]["id"] == s["id"]
        st, one = await call(http, "GET", f"/admin/sessions/{s['id']}")
        assert st == 200 and one["state"] == "live" and one["live"]["token"] == "bob"
        st, body = await call(http, "DELETE", f"/admin/sessions/{s['id']}")
        assert st == 202 and body["instance"] == "here"
        kinds = []
        try:
            async with asyncio.timeout(5):
                async for msg in ws:
                    kinds.append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
        assert ws.close_code == 1008
        assert any(e["type"] == "error" for e in kinds)
    for _ in range(100):
        st, one = await call(http, "GET", f"/admin/sessions/{s['id']}")
        if one["closed_at"] and one["ledger"]:
            break
        await asyncio.sleep(0.05)
    assert one["close_code"] == 1008 and one["state"] == "closed"
    assert one["ledger"][0]["kind"] == "response" and one["cost_nanos"] > 0
    assert (await call(http, "GET", "/admin/sessions/live"))[1] == []
    st, page = await call(http, "GET", "/admin/sessions", params={
        "token": "bob", "model": "gpt-realtime", "channel": "standin", "close_code": "1008"})
    assert page["total"] == 1 and page["sessions"][0]["cost_usd"] == one["cost_usd"]
    st, page = await call(http, "GET", "/admin/sessions", params={"close_code": "1000"})
    assert page["total"] == 0
    st, page = await call(http, "GET", "/admin/sessions", params={"until": "2020-01-01"})
    assert page["total"] == 0
    st, page = await call(http, "GET", "/admin/sessions", params={"limit": 1, "offset": 1})
    assert page["sessions"] == [] and page["total"] == 1
    for q, field in (({"close_code": "x"}, "close_code"), ({"limit": "0"}, "limit"),
                     ({"state": "zombie"}, "state"), ({"since": "yesterday"}, "since"),
                     ({"until": "2026-02-30"}, "until")):
        st, err = await call(http, "GET", "/admin/sessions", params=q)
        assert st == 400 and err["error"]["param"] == field, (q, err)
    assert (await call(http, "DELETE", f"/admin/sessions/{s['id']}"))[0] == 404
    assert (await call(http, "GET", "/admin/sessions/sess_nope"))[0] == 404
    st, tokens = await call(http, "GET", "/admin/tokens")
    assert tokens[0]["last_used_at"] is not None and tokens[0]["spent_usd"] != "0"
    # usage: JSON, CSV both ways, a bad parameter
    st, rep = await call(http, "GET", "/admin/usage", params={"by": "token"})
    assert rep["rows"][0]["key"] == "bob" and rep["total"]["cost_nanos"] == one["cost_nanos"]
    for path, params in (("/admin/usage", {"by": "token", "format": "csv"}),
                         ("/admin/usage.csv", {"by": "token"})):
        async with http.get(path, params=params) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            table = list(csv.DictReader(io.StringIO(await r.text())))
        assert table[0]["token"] == "bob" and table[-1]["token"] == "total"
        assert table[-1]["cost_usd"] == rep["total"]["cost_usd"]
    st, err = await call(http, "GET", "/admin/usage", params={"by": "week"})
    assert st == 400 and err["error"]["param"] == "by"
    st, err = await call(http, "GET", "/admin/usage", params={"format": "xml"})
    assert st == 400 and err["error"]["param"] == "format"
    st, ov = await call(http, "GET", "/admin/overview")
    assert ov["today"]["sessions"] == 1 and len(ov["days"]) == 7
    assert ov["channels"][0]["name"] == "standin"


async def test_auth_failures_and_the_openapi_document(env):
    g, up, http = env
    async with aiohttp.ClientSession(g.http) as anon:
        for method, path in (("GET", "/admin/tokens"), ("POST", "/admin/tokens"),
                             ("DELETE", "/admin/sessions/x"), ("GET", "/admin/openapi.json"),
                             ("POST", "/admin/channels/x/test")):
            async with anon.request(method, path) as r:
                assert r.status == 401, path
                assert (await r.json())["error"]["code"] == "invalid_admin_token"
        async with anon.get("/admin/tokens", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
    st, doc = await call(http, "GET", "/admin/openapi.json")
    assert st == 200 and doc["openapi"].startswith("3.")
    paths = doc["paths"]
    # every route the app serves under /admin/ is in the document, with its methods
    served = {}
    for route in g.server.runner.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        p = info.get("path") or info.get("formatter")
        if p and p.startswith("/admin/") and route.method != "HEAD":
            served.setdefault(p, set()).add(route.method.lower())
    for p, methods in served.items():
        assert p in paths and methods <= set(paths[p]), p
    assert set(doc["components"]["schemas"]["TokenCreate"]["properties"]) >= {
        "name", "quota_usd", "policy", "origins", "log_transcripts"}
