"""The CLI twins of the console's new admin routes: tokens delete, channels
update and test (a real handshake with the stand-in), sessions list and
show -- the same ops, the same answers."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from openopen8.cli import app
from tests.standin import StandIn


def run(*args: str, data_dir) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], env={
        "OPENOPEN8_DATABASE_URL": "", "OPENOPEN8_ADMIN_TOKEN": ""})
    return r.exit_code, r.stdout, r.stderr


async def test_console_verbs_from_the_cli(tmp_path):
    def cli(*args):      # the CLI runs its own event loop: in a thread
        return asyncio.to_thread(run, *args, data_dir=tmp_path)

    async with StandIn() as up:
        code, _, err = await cli("channels", "add", "up", "--type", "openai", "--base-url",
                                 up.base_url, "--key", "sk-good", "--models", "gpt-realtime")
        assert code == 0, err
        code, out, _ = await cli("channels", "test", "up", "--json")
        res = json.loads(out)
        assert code == 0 and res["ok"] and res["event"] == "session.created"
        code, out, err = await cli("channels", "update", "up", "--key", "sk-bad",
                                   "--priority", "4")
        assert code == 0 and "priority 4" in out
        code, out, err = await cli("channels", "test", "up")
        assert code == 1 and "auth" in err
        code, out, err = await cli("channels", "update", "up", "--weight", "0")
        assert code == 1 and "--weight" in err
        code, out, err = await cli("channels", "update", "nope", "--priority", "1")
        assert code == 1 and "no channel" in err

    assert (await cli("tokens", "create", "gone"))[0] == 0
    code, out, _ = await cli("tokens", "delete", "gone")
    assert code == 0 and "Deleted" in out
    code, out, _ = await cli("tokens", "list", "--json")
    assert json.loads(out) == []
    code, out, _ = await cli("sessions", "list", "--json")
    assert code == 0 and json.loads(out)["total"] == 0
    code, out, err = await cli("sessions", "list", "--state", "zombie")
    assert code == 1 and "state" in err
    code, out, err = await cli("sessions", "show", "sess_nope")
    assert code == 1 and "no session" in err
