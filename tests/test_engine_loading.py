"""While the local models load, nobody waits in silence: a client waits at
most the connect timeout and is then refused with 503 "still loading", the
server log says a client waits, and /healthz says ``starting``/``loading``
until the models are ready.

The loading state is held open on purpose with a test backend whose load
waits for the test (deterministic); the last test serves the real CLI with
the real models and checks the states /healthz goes through."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading

import aiohttp
import pytest

from openopen8.engine.backends.base import Backends, MissingDependency
from openopen8.engine.backends.fake import FakeLlm, FakeStt, FakeTts, FakeVad
from openopen8.engine.config import EngineConfig
from openopen8.engine.runtime import LocalEngine
from openopen8.providers.local import LocalProvider
from tests.conftest import start_gateway
from tests.test_refusals import UPGRADE, assert_error_shape, upgrade

LOCAL = "openopen8-local"
FAKE = EngineConfig(vad="fake", stt="fake", llm="fake", tts="fake")


class GatedVad(FakeVad):
    """A VAD whose load takes as long as the test says (on the engine's
    loading thread), or fails."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.loaded = False
        self.gate = threading.Event()
        self.fail = fail

    def load(self) -> None:
        assert self.gate.wait(60), "the test never released the load"
        if self.fail:
            raise MissingDependency("nothing-installed", "VAD")
        self.loaded = True


@pytest.fixture
def gated():
    vad = GatedVad()
    yield vad
    vad.gate.set()                 # never leave the loading thread waiting


async def serve_gated(tmp_path, vad: GatedVad, connect_timeout: float):
    g = await start_gateway(tmp_path, local_engine=True, connect_timeout=connect_timeout)
    # the built-in engine on the gated backend (made on first use, so in time)
    g.gw.router.local_factory = lambda: LocalProvider(
        FAKE, engine=LocalEngine(FAKE, Backends(vad=vad, stt=FakeStt(), llm=FakeLlm(),
                                                tts=FakeTts())))
    return g


async def health(g) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(g.http + "/healthz") as resp:
            assert resp.status == 200
            return await resp.json()


async def session_created(g, token: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(g.url + f"?model={LOCAL}&token={token}") as ws:
            return json.loads(await asyncio.wait_for(ws.receive_str(), 30))


async def test_a_client_waits_at_most_the_connect_timeout_then_hears_still_loading(
        tmp_path, gated, caplog):
    caplog.set_level(logging.INFO)
    g = await serve_gated(tmp_path, gated, connect_timeout=0.5)
    try:
        token = await g.token()
        assert await health(g) == {"status": "starting", "local_engine": "loading", "sessions": 0}
        status, body = await asyncio.wait_for(
            upgrade(g.url + f"?model={LOCAL}&token={token}"), 30)   # not forever
        assert status == 503
        err = assert_error_shape(body)
        assert err["code"] == "model_loading"
        assert "still loading" in err["message"] and "try again in a few seconds" in err["message"]
        async with aiohttp.ClientSession() as http:      # and says when to retry
            async with http.get(g.url + f"?model={LOCAL}&token={token}",
                                headers=UPGRADE) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
        assert await health(g) == {"status": "starting", "local_engine": "loading", "sessions": 0}
        logged = [r.getMessage() for r in caplog.records]
        assert any("models still loading" in m and "waits" in m for m in logged), logged
        assert any("refused 503 model_loading" in m for m in logged), logged

        gated.gate.set()                     # the models are ready now
        for _ in range(200):
            if (await health(g))["local_engine"] == "ready":
                break
            await asyncio.sleep(0.05)
        assert await health(g) == {"status": "ok", "local_engine": "ready", "sessions": 0}
        assert (await session_created(g, token))["type"] == "session.created"
    finally:
        await g.stop()


async def test_a_client_that_connects_while_loading_gets_its_session_once_ready(
        tmp_path, gated, caplog):
    caplog.set_level(logging.INFO)
    g = await serve_gated(tmp_path, gated, connect_timeout=30)
    try:
        token = await g.token()
        waiting = asyncio.ensure_future(session_created(g, token))
        for _ in range(200):                 # the client is waiting, and the log says so
            if any("models still loading" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no 'still loading' line while a client waits")
        assert not waiting.done()
        assert (await health(g))["status"] == "starting"
        gated.gate.set()
        assert (await asyncio.wait_for(waiting, 30))["type"] == "session.created"
        assert (await health(g))["local_engine"] == "ready"
    finally:
        await g.stop()


async def test_models_that_fail_to_load_are_unavailable_and_not_listed(tmp_path):
    vad = GatedVad(fail=True)
    vad.gate.set()
    g = await serve_gated(tmp_path, vad, connect_timeout=5)
    try:
        token = await g.token()
        status, body = await upgrade(g.url + f"?model={LOCAL}&token={token}")
        assert status == 502
        assert "nothing-installed" in assert_error_shape(body)["message"]   # says what to install
        assert await health(g) == {"status": "ok", "local_engine": "unavailable", "sessions": 0}
        async with aiohttp.ClientSession() as http:
            async with http.get(g.base_url + "/models", params={"token": token}) as resp:
                assert (await resp.json())["data"] == []
    finally:
        await g.stop()


async def test_healthz_says_disabled_when_the_local_engine_is_off(gateway):
    assert await health(gateway) == {"status": "ok", "local_engine": "disabled", "sessions": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.mark.slow
async def test_serve_reports_starting_then_ok_while_the_real_models_load(tmp_path):
    """``openopen8 serve`` on the Quick start setup (real models, loaded in
    the server process): /healthz goes starting/loading -> ok/ready, never
    back, and the log shows the load.  A client sent in as soon as the port
    answers (connect timeout 0.2 s) is normally refused "still loading"; when
    it is, each line about it is in the log -- they used to vanish, written
    while llama.cpp had the process's stderr pointed at /dev/null."""
    port = free_port()
    log = tmp_path / "serve.log"
    data = tmp_path / "data"
    env = {**os.environ, "OPENOPEN8_DATA_DIR": str(data), "OPENOPEN8_CONNECT_TIMEOUT": "0.2"}
    env.pop("OPENOPEN8_CONFIG", None)
    token = subprocess.run([sys.executable, "-m", "openopen8.cli", "tokens", "create", "early"],
                           env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
    proc = subprocess.Popen([sys.executable, "-m", "openopen8.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    seen: list[tuple[str, str]] = []
    early: int | None = None
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(1200):                          # up to ~2 minutes
                assert proc.poll() is None, log.read_text()
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        body = await r.json()
                        assert r.status == 200
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
                    continue
                if early is None:
                    async with http.get(f"http://127.0.0.1:{port}/v1/realtime",
                                        params={"model": LOCAL, "token": token},
                                        headers=UPGRADE) as r:
                        early = r.status
                        if early == 503:
                            assert (await r.json())["error"]["code"] == "model_loading"
                state = (body["status"], body["local_engine"])
                if not seen or seen[-1] != state:
                    seen.append(state)
                if state == ("ok", "ready"):
                    break
                await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert seen and seen[-1] == ("ok", "ready"), (seen, text)
    assert set(seen) <= {("starting", "loading"), ("ok", "ready")}, seen
    assert "loading models" in text and "local engine ready" in text, text
    for kind in ("vad", "stt", "llm", "tts"):
        assert f"local engine: {kind} " in text, text        # every model's progress line
    assert early in (101, 503), early
    if early == 503:
        for line in ("models still loading; session", "models still loading after 0.2 s",
                     "refused 503 model_loading"):
            assert line in text, text


def test_log_lines_survive_llama_cpp_silencing_stderr(tmp_path):
    """What serve's log handlers go through while llama-cpp-python loads a
    model (its own silencer, as ``Llama(verbose=False)`` uses it)."""
    pytest.importorskip("llama_cpp")
    code = (
        "import logging\n"
        "from llama_cpp._utils import suppress_stdout_stderr\n"
        "from openopen8.app import keep_log_streams\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "keep_log_streams()\n"
        "with suppress_stdout_stderr(disable=False):\n"
        "    logging.getLogger('openopen8').info('logged while llama.cpp is silenced')\n"
        "logging.getLogger('openopen8').info('logged after')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["logged while llama.cpp is silenced", "logged after"]
