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
    assert [r["name"] for r in json.loads(cli("channels", "list", "--json", data_dir=tmp_path).stdout)
            if not r["builtin"]] == ["az"]
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


# ---- the first hour (issue 13): what a new user meets ----------------------

def _no_server_env() -> dict:
    """Settings whose host:port has no server, so `channels list` reads files."""
    return {"OPENOPEN8_PORT": str(_free_port())}


def _listing(tmp_path: Path, env: dict | None = None) -> list[dict]:
    return json.loads(cli("channels", "list", "--json", data_dir=tmp_path,
                          env={**_no_server_env(), **(env or {})}).stdout)


def test_channels_list_shows_the_builtin_channel_and_whether_its_models_are_installed(tmp_path):
    rows = _listing(tmp_path)                   # a fresh data dir: only the built-in
    assert [(r["name"], r["builtin"], r["models"]) for r in rows] == \
        [("local", True, ["openopen8-local"])]
    assert rows[0]["models_state"] == "installed" and rows[0]["problems"] == []
    assert [p["part"] for p in rows[0]["parts"]] == ["vad", "stt", "llm", "tts"]
    table = cli("channels", "list", data_dir=tmp_path, env=_no_server_env()).stdout
    assert "local (built-in)" in table and "openopen8-local" in table
    assert "models installed" in table and "openopen8 serve" in table

    # a model file the settings name that is not there: not installed, and why
    (tmp_path / "openopen8.toml").write_text(
        f'[local]\nllm_model_path = "{tmp_path / "missing.gguf"}"\n')
    row, = _listing(tmp_path)
    assert row["models_state"] == "not installed"
    assert any("missing.gguf" in p for p in row["problems"])
    p = cli("channels", "list", data_dir=tmp_path, env=_no_server_env())
    assert "models not installed" in p.stdout and "missing.gguf" in p.stderr
    (tmp_path / "openopen8.toml").unlink()

    # local_engine = false: the server serves no built-in channel, nor does the listing
    off = cli("channels", "list", "--json", data_dir=tmp_path,
              env={**_no_server_env(), "OPENOPEN8_LOCAL_ENGINE": "false"})
    assert json.loads(off.stdout) == []
    off = cli("channels", "list", data_dir=tmp_path,
              env={**_no_server_env(), "OPENOPEN8_LOCAL_ENGINE": "false"})
    assert "local_engine = false" in off.stderr

    # a stored channel serving openopen8-local replaces the built-in, even disabled
    cli("channels", "add", "mine", "--type", "local", "--models", "openopen8-local",
        data_dir=tmp_path)
    assert [(r["name"], r["builtin"]) for r in _listing(tmp_path)] == [("mine", False)]
    cli("channels", "disable", "mine", data_dir=tmp_path)
    assert [(r["name"], r["builtin"]) for r in _listing(tmp_path)] == [("mine", False)]


class _Health:
    """A server's /healthz on 127.0.0.1 saying what the gateway says while
    its engine loads (503, "starting", "loading") and once it is ready."""

    def __init__(self) -> None:
        import http.server
        import threading
        health = self
        self.state = "loading"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                loading = health.state == "loading"
                body = json.dumps({"status": "starting" if loading else "ok", "sessions": 0,
                                   "local_engine": health.state}).encode()
                self.send_response(503 if loading else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_channels_list_asks_a_running_server_whether_its_engine_is_loaded(tmp_path):
    health = _Health()
    try:
        env = {"OPENOPEN8_HOST": "127.0.0.1", "OPENOPEN8_PORT": str(health.port)}
        row, = _listing(tmp_path, env)
        assert row["builtin"] and row["models_state"] == "loading"
        assert row["models_state_from"] == f"http://127.0.0.1:{health.port}/healthz"
        health.state = "ready"
        row, = _listing(tmp_path, env)
        assert row["models_state"] == "loaded"
        table = cli("channels", "list", data_dir=tmp_path, env=env).stdout
        assert "models loaded" in table and f"127.0.0.1:{health.port}" in table
    finally:
        health.close()


def test_serve_on_a_port_in_use_says_so_in_one_line_before_making_a_data_dir(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        new_dir = tmp_path / "new"
        p = cli("serve", "--host", "127.0.0.1", "--port", str(port), data_dir=new_dir,
                env={"OPENOPEN8_LOCAL_ENGINE": "false"}, check=False)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert f"127.0.0.1:{port} is in use" in lines[0] and "--port" in lines[0]
    assert not new_dir.exists()                 # nothing made or migrated


def test_token_expiry_in_the_past_or_on_no_such_day_is_refused(tmp_path):
    past = cli("tokens", "create", "old", "--expires", "2020-01-01", data_dir=tmp_path, check=False)
    assert past.returncode == 1 and "2020-01-01 is in the past" in past.stderr
    assert "old" not in past.stdout
    nosuch = cli("tokens", "create", "feb", "--expires", "2027-02-30", data_dir=tmp_path, check=False)
    assert nosuch.returncode == 1
    assert "2027-02-30: that date does not exist (February 2027 has 28 days)" in nosuch.stderr
    assert "YYYY-MM-DD" not in nosuch.stderr
    assert json.loads(cli("tokens", "list", "--json", data_dir=tmp_path).stdout) == []
    ok = json.loads(cli("tokens", "create", "new", "--expires", "2999-12-31", "--json",
                        data_dir=tmp_path).stdout)
    assert ok["expires_at"].startswith("2999-12-31T23:59:59")
    upd = cli("tokens", "update", "new", "--expires", "2020-01-01", data_dir=tmp_path, check=False)
    assert upd.returncode == 1 and "in the past" in upd.stderr
    assert json.loads(cli("tokens", "list", "--json", data_dir=tmp_path).stdout)[0][
        "expires_at"].startswith("2999-12-31")


def test_serve_help_shows_the_defaults(tmp_path):
    p = cli("serve", "--help", data_dir=tmp_path,
            env={"XDG_DATA_HOME": str(tmp_path / "xdg"), "COLUMNS": "400"})
    text = " ".join(p.stdout.split())
    assert "default 127.0.0.1" in text and "default 8000" in text
    assert f"default {tmp_path / 'xdg' / 'openopen8'}" in text
    assert "foreground" in text


async def test_a_bad_report_grouping_is_named_as_the_user_typed_it(tmp_path):
    import aiohttp
    import pytest
    from openopen8.store.base import StoreError
    from .conftest import start_gateway

    p = cli("usage", "--by", "week", data_dir=tmp_path / "cli", check=False)
    assert p.returncode == 1
    assert "--by must be one of day, model, token, channel (got 'week')" in p.stderr
    g = await start_gateway(tmp_path, admin_token="adm-secret")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(g.http + "/admin/usage?by=week",
                                headers={"Authorization": "Bearer adm-secret"}) as resp:
                assert resp.status == 400
                message = (await resp.json())["error"]["message"]
        assert "the 'by' query parameter must be one of day, model, token, channel" in message
        assert "--" not in message
        with pytest.raises(StoreError) as caught:   # the store says neither
            await g.gw.store.usage_report("week")
        assert str(caught.value) == "by must be one of day, model, token, channel"
    finally:
        await g.stop()
