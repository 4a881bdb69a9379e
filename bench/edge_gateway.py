"""The gateway under test in the reliability run (``bench/edge.py``), and a client for it.

:class:`Gateway` is one ``openopen8 serve`` process on a data dir of its own
(SQLite, a token made with the CLI, a channel to the stand-in upstream),
which a phase may SIGKILL and start again on the same dir, or start with a
low descriptor limit.  :class:`Reader` reads a client session's server
events in the background and counts what the phases report (errors and
where they came from, echoes, ``response.done``).  Clients use the
``websockets`` library: it sends whatever bytes it is given, as a text or a
binary frame, which a fuzzing client needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from edge_upstream import UPSTREAM_ERROR_PREFIX
from relay import free_port, stop_proc, wait_http

MODEL = "gpt-realtime"


@dataclass
class Gateway:
    """One ``openopen8 serve`` on a data dir of its own; restartable on that dir."""

    name: str
    src: Path
    data: Path
    upstream_http: str
    log_path: Path
    nofile: int | None = None
    proc: subprocess.Popen | None = None
    port: int = 0
    secret: str = ""
    starts: int = 0

    def env(self) -> dict[str, str]:
        env = {**os.environ, "OPENOPEN8_DATA_DIR": str(self.data),
               "OPENOPEN8_LOCAL_ENGINE": "false",
               "PYTHONPATH": str(self.src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for k in ("OPENOPEN8_DATABASE_URL", "OPENOPEN8_CONFIG"):
            env.pop(k, None)
        return env

    def provision(self) -> None:
        cli = [sys.executable, "-m", "openopen8.cli"]
        out = subprocess.run([*cli, "tokens", "create", "edge", "--json"], env=self.env(),
                             cwd=self.src, capture_output=True, text=True, timeout=120, check=True)
        self.secret = json.loads(out.stdout.strip().splitlines()[-1])["secret"]
        subprocess.run([*cli, "channels", "add", "standin", "--type", "openai", "--key",
                        "sk-edge", "--base-url", self.upstream_http + "/v1", "--models", MODEL],
                       env=self.env(), cwd=self.src, capture_output=True, text=True, timeout=120,
                       check=True)

    def start(self, timeout: float = 60) -> None:
        self.port = free_port()
        nofile = self.nofile

        def limit() -> None:   # in the child, before exec
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openopen8.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env(), cwd=self.src, stdout=logf, stderr=logf, start_new_session=True,
            preexec_fn=limit if nofile else None)
        logf.close()
        self.starts += 1
        wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout, self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self) -> None:
        stop_proc(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model={MODEL}"

    @property
    def db(self) -> Path:
        return self.data / "openopen8.db"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> dict[str, int]:
        """Bytes, lines, ERROR lines and tracebacks logged from ``offset`` on."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        return {"log_bytes": len(data), "log_lines": data.count(b"\n"),
                "log_error_lines": data.count(b" ERROR "),
                "log_tracebacks": data.count(b"Traceback (most recent call last)")}


async def connect(gw: Gateway, timeout: float = 10):
    return await ws_connect(gw.url, additional_headers={"Authorization": f"Bearer {gw.secret}"},
                            compression=None, max_size=None, ping_interval=None,
                            open_timeout=timeout, close_timeout=2)


async def healthz(port: int, timeout: float) -> tuple[bool, float]:
    """One ``GET /healthz`` on a new connection: (answered 200, seconds)."""
    t0 = time.monotonic()
    ok = False
    w = None
    try:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            ok = (await r.readline()).startswith(b"HTTP/1.1 200")
    except (TimeoutError, OSError):
        pass
    finally:
        if w is not None:
            w.close()
    return ok, time.monotonic() - t0


class Reader:
    """Reads a client session's server events and counts what matters."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.types: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.errors = self.events = 0      # errors; other events (not echoes)
        self.errors_gateway = 0
        self.errors_upstream = 0
        self.echoes: set[str] = set()
        self.closed = False
        self.last_done_at = 0.0
        self.first_at = 0.0
        self._changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for msg in self.ws:
                self._on(msg)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._changed.set()

    def _on(self, msg: str | bytes) -> None:
        now = time.monotonic()
        self.first_at = self.first_at or now
        self._changed.set()
        if isinstance(msg, bytes):
            self.types["(binary)"] += 1
            return
        try:
            ev = orjson.loads(msg)
            t = ev.get("type")
        except (orjson.JSONDecodeError, AttributeError):
            self.types["(not an event)"] += 1
            return
        self.types[t] += 1
        if t == "error":
            self.errors += 1
            err = ev.get("error") or {}
            self.error_codes[str(err.get("code"))] += 1
            if str(ev.get("event_id", "")).startswith(UPSTREAM_ERROR_PREFIX):
                self.errors_upstream += 1
            else:
                self.errors_gateway += 1
        elif t == "bench.echo":
            self.echoes.add(ev.get("event_id"))
            return
        elif t == "response.done":
            self.last_done_at = now
        self.events += 1

    async def until(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return pred()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
        return True

    def close_code(self) -> int:
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else 1006


