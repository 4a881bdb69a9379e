"""Crash durability (issue 12, defect 6): a gateway process killed with
SIGKILL shortly after a ``response.done`` keeps that response's ledger row,
and the session row it left open is closed (``closed_by = crash``) when the
gateway starts again on the same data directory.

The real CLI serves in a subprocess (SQLite, the stand-in upstream on
loopback).  The periodic flush is set to 10 s, so only the group commit
(``ledger_commit_seconds``, 0.05 s) can have written the rows in time."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from openopen8 import ops
from openopen8.crypto import SecretBox, server_secret
from openopen8.store.sql import open_store
from tests.standin import Script, StandIn
from tests.test_refusals import free_port

RESPONSES = 5


def serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OPENOPEN8_LOCAL_ENGINE": "false", "OPENOPEN8_LEDGER_FLUSH_SECONDS": "10",
           "OPENOPEN8_REFRESH_SECONDS": "0.2"}
    return subprocess.Popen(
        [sys.executable, "-m", "openopen8.cli", "serve", "--data-dir", str(data), "--host",
         "127.0.0.1", "--port", str(port)], env=env, stdout=log.open("ab"),
        stderr=subprocess.STDOUT)


async def healthy(port: int, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert proc.poll() is None, "the gateway exited"
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not start")


def rows(data: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{data / 'openopen8.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("delay", [0.3])
async def test_sigkill_after_response_done_loses_no_row_and_restart_closes_the_session(
        tmp_path, delay):
    data, log = tmp_path / "data", tmp_path / "serve.log"
    async with StandIn(ping_interval=0) as up:
        store = await open_store(f"sqlite:///{data / 'openopen8.db'}")
        try:
            box = SecretBox(server_secret(None, data))
            await ops.add_channel(store, box, "standin", "openai", key="sk-good",
                                  models=["gpt-realtime"], base_url=up.base_url)
            secret = (await ops.create_token(store, "crash")).secret
        finally:
            await store.close()
        port = free_port()
        proc = serve(data, port, log)
        try:
            await healthy(port, proc)
            up.script = Script(text="Short reply.", audio_deltas=0)
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(
                    f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime",
                    headers={"Authorization": f"Bearer {secret}"})
                done = 0
                await ws.send_json({"type": "session.update", "session": {
                    "type": "realtime", "output_modalities": ["text"]}})
                await ws.send_json({"type": "response.create"})
                async for msg in ws:
                    ev = msg.json()
                    if ev["type"] == "response.done":
                        done += 1
                        if done == RESPONSES:
                            break
                        await ws.send_json({"type": "response.create"})
                await asyncio.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                await ws.close()
            # every response whose response.done the client saw is in the ledger
            assert rows(data, "SELECT count(*) FROM ledger") == [(RESPONSES,)]
            assert rows(data, "SELECT closed_at, closed_by FROM sessions") == [(None, None)]
            # the next start of this gateway closes what the crash left open
            proc = serve(data, port, log)
            await healthy(port, proc)
            [(closed_at, closed_by)] = rows(data, "SELECT closed_at, closed_by FROM sessions")
            assert closed_by == "crash" and closed_at is not None
            assert "left open by an earlier gateway process" in log.read_text()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
