"""The `openopen8` command: tokens, channels, and a served gateway that sees
CLI changes without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


from .test_refusals import upgrade

EXE = [sys.executable, "-m", "openopen8.cli"]


def cli(*args: str, data_dir: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    e.pop("OPENOPEN8_DATABASE_URL", None)
    p = subprocess.run([*EXE, *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                       env=e, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed: {p.stdout}\n{p.stderr}")
    return p


def test_token_secret_is_the_last_line_and_never_listed(tmp_path):
    p = cli("tokens", "create", "alice", "--models", "gpt-realtime,gpt-realtime-mini", data_dir=tmp_path)
    secret = p.stdout.rstrip("\n").splitlines()[-1]
    assert secret.startswith("oo8_") and " " not in secret
    listing = cli("tokens", "list", "--json", data_dir=tmp_path).stdout
    rows = json.loads(listing)
    assert rows[0]["name"] == "alice" and rows[0]["models"] == ["gpt-realtime", "gpt-realtime-mini"]
    assert secret not in listing and secret[12:] not in cli("tokens", "list", data_dir=tmp_path).stdout
    j = json.loads(cli("tokens", "create", "bob", "--json", data_dir=tmp_path).stdout)
    assert j["secret"].startswith("oo8_") and j["name"] == "bob"
    dup = cli("tokens", "create", "bob", data_dir=tmp_path, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    bad = cli("tokens", "create", "carol", "--expires", "someday", data_dir=tmp_path, check=False)
    assert bad.returncode != 0 and "YYYY-MM-DD" in bad.stderr


def test_channel_keys_are_never_printed(tmp_path):
    key = "sk-secret-upstream-key-xyz"
    add = cli("channels", "add", "main", "--type", "openai", "--key", key, "--models", "gpt-realtime",
              "--priority", "2", "--weight", "3", data_dir=tmp_path)
    az = cli("channels", "add", "az", "--type", "azure", "--endpoint", "https://res.openai.azure.com",
             "--key", key, "--models", "gpt-realtime", "--deployment", "gpt-realtime=prod-rt",
             "--api-version", "2025-04-01-preview", data_dir=tmp_path)
    listing = cli("channels", "list", "--json", data_dir=tmp_path).stdout
    table = cli("channels", "list", data_dir=tmp_path).stdout
    for text in (add.stdout, az.stdout, listing, table):
        assert key not in text
    rows = {r["name"]: r for r in json.loads(listing)}
    assert rows["main"]["url"] == "https://api.openai.com/v1" and rows["main"]["weight"] == 3
    assert rows["az"]["deployments"] == {"gpt-realtime": "prod-rt"}
    assert key.encode() not in (tmp_path / "openopen8.db").read_bytes()
    cli("channels", "disable", "main", data_dir=tmp_path)
    assert not {r["name"]: r for r in json.loads(cli("channels", "list", "--json", data_dir=tmp_path).stdout)}["main"]["enabled"]
    cli("channels", "remove", "main", data_dir=tmp_path)
    assert [r["name"] for r in json.loads(cli("channels", "list", "--json", data_dir=tmp_path).stdout)] == ["az"]
    missing = cli("channels", "remove", "main", data_dir=tmp_path, check=False)
    assert missing.returncode != 0 and "no channel" in missing.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _status_within(url: str, headers: dict, want: int, seconds: float = 6.0) -> int:
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline:
        status, _ = await upgrade(url, headers)
        if status == want:
            return status
        await asyncio.sleep(0.2)
    return status


async def test_served_gateway_sees_cli_changes_without_restart(tmp_path):
    port = _free_port()
    env = {**os.environ, "OPENOPEN8_LOCAL_ENGINE": "false"}
    env.pop("OPENOPEN8_DATABASE_URL", None)
    server = subprocess.Popen([*EXE, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        secret = cli("tokens", "create", "live", data_dir=tmp_path).stdout.splitlines()[-1]
        auth = {"Authorization": f"Bearer {secret}"}
        assert await _status_within(url, auth, 404) == 404      # known token, no channel yet
        cli("channels", "add", "dead", "--type", "openai", "--key", "k", "--models", "gpt-realtime",
            "--base-url", f"http://127.0.0.1:{_free_port()}/v1", data_dir=tmp_path)
        assert await _status_within(url, auth, 502) == 502      # channel seen, upstream down
        cli("tokens", "revoke", "live", data_dir=tmp_path)
        assert await _status_within(url, auth, 401) == 401
    finally:
        server.terminate()
        output = server.communicate(timeout=15)[0]
    assert server.returncode == 0, output
    assert "listening on ws://127.0.0.1" in output
    assert secret not in output
