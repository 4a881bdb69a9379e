"""The operator's surface: token limits and usage reports from the CLI and
from the admin API, over the same functions, matching the ledger."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import aiohttp
from typer.testing import CliRunner

from openopen8 import ops
from openopen8.billing import Tokens
from openopen8.cli import app
from openopen8.store.base import UsageRow
from openopen8.store.sql import open_store
from tests.conftest import start_gateway


def run(*args: str, data_dir) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], env={
        "OPENOPEN8_DATABASE_URL": "", "OPENOPEN8_ADMIN_TOKEN": ""})
    return r.exit_code, r.stdout, r.stderr


async def seed(db_url: str) -> None:
    store = await open_store(db_url)
    try:
        toks = {t.name: t.id for t in await store.list_tokens()}
        day = datetime(2026, 5, 4, 12, tzinfo=timezone.utc)
        rows = [UsageRow("s1", "response", "r1", toks["alice"], "gpt-realtime",
                         Tokens(input_text=59, input_audio=73, cached_audio=64, output_text=41,
                                output_audio=147), 10_613_600, channel="main", created_at=day),
                UsageRow("s1", "transcription", "i/0", toks["alice"], "whisper-1",
                         Tokens(seconds=60), 6_000_000, channel="main", created_at=day),
                UsageRow("s2", "response", "r1", toks["bob"], "mystery", Tokens(output_text=1000),
                         20_000_000, fallback=True, channel="main", created_at=day)]
        await store.write_ledger(rows, [])
    finally:
        await store.close()


def test_token_limits_and_usage_from_the_cli(tmp_path):
    code, out, err = run("tokens", "create", "alice", "--quota-usd", "2.5", "--max-sessions", "3",
                         "--max-duration", "600", "--idle-timeout", "30",
                         "--sessions-per-minute", "10", "--json", data_dir=tmp_path)
    assert code == 0, err
    view = json.loads(out)
    assert (view["quota_usd"], view["spent_usd"], view["max_sessions"], view["max_duration"],
            view["idle_timeout"], view["sessions_per_minute"]) == ("2.5", "0", 3, 600.0, 30.0, 10)
    code, out, err = run("tokens", "update", "alice", "--quota-usd", "none", "--max-sessions", "5",
                         data_dir=tmp_path)
    assert code == 0 and "max sessions 5" in out and "quota" not in out
    code, out, err = run("tokens", "update", "alice", "--max-sessions", "1.5", data_dir=tmp_path)
    assert code == 1 and "whole number" in err
    code, out, err = run("tokens", "update", "nobody", "--max-sessions", "1", data_dir=tmp_path)
    assert code == 1 and "no token" in err
    assert run("tokens", "create", "bob", data_dir=tmp_path)[0] == 0

    asyncio.run(seed(f"sqlite:///{tmp_path / 'openopen8.db'}"))
    code, out, err = run("usage", "--by", "token", "--json", data_dir=tmp_path)
    assert code == 0, err
    report = json.loads(out)
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["alice"]["cost_usd"] == "0.0166136" and rows["alice"]["transcriptions"] == 1
    assert rows["alice"]["cached_audio"] == 64 and rows["alice"]["output_audio"] == 147
    assert rows["alice"]["transcription_seconds"] == 60
    assert rows["bob"]["priced_by_fallback"] == 1
    assert report["total"]["cost_nanos"] == 36_613_600
    code, out, err = run("usage", "--token", "alice", "--model", "gpt-realtime", "--since",
                         "2026-05-04", "--until", "2026-05-04", "--json", data_dir=tmp_path)
    assert json.loads(out)["total"]["cost_usd"] == "0.0106136"
    code, out, err = run("usage", "--until", "2026-05-03", "--json", data_dir=tmp_path)
    assert json.loads(out)["rows"] == []
    code, out, err = run("usage", "--by", "day", data_dir=tmp_path)
    assert code == 0 and "2026-05-04" in out and "0.0366136" in out
    assert "fallback" in err                                  # the operator is told
    code, out, err = run("usage", "--by", "week", data_dir=tmp_path)
    assert code == 1 and "--by" in err
    listing = run("tokens", "list", data_dir=tmp_path)[1]
    assert "0.0166136" in listing


async def test_admin_api_needs_the_admin_token_and_matches_the_cli_report(tmp_path):
    g = await start_gateway(tmp_path, admin_token="adm-very-secret")
    try:
        await ops.create_token(g.gw.store, "alice")
        await ops.create_token(g.gw.store, "bob")
        await seed(g.gw.settings.db_url)
        url = g.http + "/admin/usage?by=model&since=2026-05-01"
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer nope"},
                            {"Authorization": "adm-very-secret"}):
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 401
                    body = await resp.json()
                    assert body["error"]["code"] == "invalid_admin_token"
                    assert "adm-very-secret" not in json.dumps(body)
            ok = {"Authorization": "Bearer adm-very-secret"}
            async with http.get(url, headers=ok) as resp:
                assert resp.status == 200
                got = await resp.json()
            assert got == await ops.usage_report(g.gw.store, by="model", since="2026-05-01")
            assert {r["key"] for r in got["rows"]} == {"gpt-realtime", "whisper-1", "mystery"}
            async with http.get(g.http + "/admin/usage?by=week", headers=ok) as resp:
                assert resp.status == 400
            async with http.get(g.http + "/admin/usage?token=bob", headers=ok) as resp:
                assert (await resp.json())["total"]["cost_usd"] == "0.02"
            async with http.get(g.http + "/admin/tokens", headers=ok) as resp:
                tokens = await resp.json()
            assert [t["spent_usd"] for t in tokens] == ["0.0166136", "0.02"]
            assert all("secret" not in t and "hash" not in json.dumps(t) for t in tokens)
    finally:
        await g.stop()
    # no admin token configured: the admin API is closed
    g = await start_gateway(tmp_path / "other")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(g.http + "/admin/usage",
                                headers={"Authorization": "Bearer "}) as resp:
                assert resp.status == 401
    finally:
        await g.stop()
