"""CPU per session-minute: a WebRTC call vs a WebSocket session, same channel.

Three processes besides this one, so that only the gateway's CPU is counted:

* the upstream: tests/standin.py (OpenAI's GA protocol); every response is
  ``--answer-s`` seconds of audio paced at real time (100 ms deltas);
* the gateway: ``openopen8`` on loopback (SQLite, the ledger on), one
  OpenAI-type channel to the stand-in;
* the clients: ``--sessions`` sessions of one kind at a time --
  ``websocket``: PCM16 24 kHz appends of 40 ms (the size the WebRTC door
  sends on) at real time, the output deltas read and dropped;
  ``webrtc``: aiortc peers in the browser's role (tests/rtckit.py), an Opus
  microphone at real time, the gateway's Opus track decoded.
  Every session speaks all the time and asks for a response every
  ``--every-s`` seconds (server VAD off), so the assistant talks about half
  of the time.

Once all sessions of a kind run (and ``--warm`` seconds more), the gateway's
CPU-seconds are read over ``--seconds``: the figure is CPU-seconds per
session-minute, and the ratio WebRTC / WebSocket.  The machine's cores are
shared by the four processes (``taskset`` them if you have more than 2).

    python bench/webrtc.py --sessions 8 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "gpt-realtime"
APPEND_MS = 40
NO_VAD = {"type": "session.update", "session": {"type": "realtime",
                                                "audio": {"input": {"turn_detection": None}}}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ roles (subprocesses)

async def role_upstream(answer_s: float) -> None:
    from tests.standin import Script, StandIn
    up = StandIn(ping_interval=0, script=Script(text="ok", audio_deltas=int(answer_s * 10),
                                                 audio_delta_ms=100, delay=0.1,
                                                 rate_limits=False))
    await up.start()
    print(f"READY {up.port}", flush=True)
    await asyncio.Event().wait()


async def role_gateway(upstream_port: int, data_dir: str) -> None:
    from openopen8 import ops
    from openopen8.app import Server
    from openopen8.settings import load_settings
    s = load_settings(data_dir=Path(data_dir), local_engine=False, webrtc_host="127.0.0.1")
    srv = await Server.start(s, "127.0.0.1", 0)
    await ops.add_channel(srv.gw.store, srv.gw.box, "standin", "openai", key="sk-good",
                          models=[MODEL], base_url=f"http://127.0.0.1:{upstream_port}/v1")
    srv.gw.router.invalidate()
    token = (await ops.create_token(srv.gw.store, "bench", None, None)).secret
    print(f"READY {srv.port} {token}", flush=True)
    await asyncio.Event().wait()


def _tone(ms: int) -> bytes:
    import numpy as np
    t = np.arange(24 * ms) / 24000
    return (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


async def role_clients(kind: str, n: int, port: int, token: str, every: float,
                       hold: float) -> None:
    http = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    counts = {"responses": 0, "failed": 0}

    async def ws_session(i: int) -> None:
        import aiohttp
        chunk = __import__("base64").b64encode(_tone(APPEND_MS)).decode()
        append = json.dumps({"type": "input_audio_buffer.append", "audio": chunk})
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}",
                                    headers={"Authorization": f"Bearer {token}"},
                                    max_msg_size=0) as ws:
                await ws.send_str(json.dumps(NO_VAD))

                async def read() -> None:
                    async for msg in ws:
                        if '"response.done"' in msg.data:
                            counts["responses"] += 1

                reader = asyncio.ensure_future(read())
                t0, k, last = time.monotonic(), 0, time.monotonic() - every + i * every / n
                while not stop.is_set():
                    await ws.send_str(append)
                    now = time.monotonic()
                    if now - last >= every:
                        last = now
                        await ws.send_str('{"type":"response.create"}')
                    k += 1
                    await asyncio.sleep(max(0.0, t0 + k * APPEND_MS / 1000 - time.monotonic()))
                reader.cancel()

    async def rtc_session(i: int) -> None:
        from tests import rtckit
        c = await rtckit.call(http, token, model=MODEL, pcm=_tone(int((hold + 60) * 1000)))
        if c.status != 201:
            counts["failed"] += 1
            return
        await asyncio.wait_for(c.opened.wait(), 20)
        c.send(NO_VAD)
        await asyncio.sleep(i * every / n)
        try:
            while not stop.is_set():
                c.send({"type": "response.create"})
                try:
                    await asyncio.wait_for(stop.wait(), every)
                except TimeoutError:
                    pass
            counts["responses"] = sum(1 for e in c.events if e["type"] == "response.done") + \
                counts["responses"]
        finally:
            await c.close()

    run = ws_session if kind == "websocket" else rtc_session
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(run(i)))
        await asyncio.sleep(0.1)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)   # the end
    stop.set()
    await asyncio.wait(tasks, timeout=20)
    print(json.dumps(counts), flush=True)


# ------------------------------------------------------------------ orchestration

def spawn(*args: str) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline().split()
    if not line or line[0] != "READY":
        raise RuntimeError(f"{args[0]} did not start")
    return p, line[1:]


def cpu_of(pid: int) -> float:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def measure(kind: str, a: argparse.Namespace, gw_pid: int, port: str, token: str) -> dict:
    clients, _ = spawn("clients", kind, str(a.sessions), port, token, str(a.every_s),
                       str(a.warm + a.seconds))
    try:
        time.sleep(a.warm)
        c0, g0, t0 = cpu_of(clients.pid), cpu_of(gw_pid), time.monotonic()
        time.sleep(a.seconds)
        c1, g1, t1 = cpu_of(clients.pid), cpu_of(gw_pid), time.monotonic()
        clients.stdin.write("\n")
        clients.stdin.flush()
        out = json.loads(clients.stdout.readline() or "{}")
    finally:
        clients.wait(timeout=30)
    minutes = a.sessions * (t1 - t0) / 60
    return {"kind": kind, "sessions": a.sessions, "seconds": round(t1 - t0, 1),
            "gateway_cpu_s": round(g1 - g0, 2),
            "cpu_s_per_session_minute": round((g1 - g0) / minutes, 3),
            "gateway_cores": round((g1 - g0) / (t1 - t0), 3),
            "clients_cpu_s": round(c1 - c0, 2), **out}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("upstream", "gateway", "clients"):
        role, args = sys.argv[1], sys.argv[2:]
        if role == "upstream":
            asyncio.run(role_upstream(float(args[0])))
        elif role == "gateway":
            asyncio.run(role_gateway(int(args[0]), args[1]))
        else:
            asyncio.run(role_clients(args[0], int(args[1]), int(args[2]), args[3],
                                     float(args[4]), float(args[5])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warm", type=float, default=5.0)
    ap.add_argument("--every-s", type=float, default=6.0, help="a response every N seconds")
    ap.add_argument("--answer-s", type=float, default=3.0, help="seconds of audio per response")
    ap.add_argument("--kinds", default="websocket,webrtc")
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="oo8-bench-webrtc-")
    up = gw = None
    try:
        up, (up_port,) = spawn("upstream", str(a.answer_s))
        gw, (port, token) = spawn("gateway", up_port, data)
        results = []
        for kind in a.kinds.split(","):
            log(f"{kind}: {a.sessions} sessions, {a.warm:g} s warm-up, {a.seconds:g} s measured")
            r = measure(kind, a, gw.pid, port, token)
            log(json.dumps(r))
            results.append(r)
            time.sleep(2)
        by = {r["kind"]: r for r in results}
        print(f"{'kind':<10} {'sessions':>8} {'gw CPU-s/session-min':>21} {'gw cores':>9} "
              f"{'responses':>9}")
        for r in results:
            print(f"{r['kind']:<10} {r['sessions']:>8} {r['cpu_s_per_session_minute']:>21.3f} "
                  f"{r['gateway_cores']:>9.3f} {r.get('responses', 0):>9}")
        if "websocket" in by and "webrtc" in by:
            ratio = by["webrtc"]["cpu_s_per_session_minute"] / by["websocket"]["cpu_s_per_session_minute"]
            print(f"WebRTC / WebSocket CPU per session-minute: {ratio:.1f}x")
            per_core = 60 / by["webrtc"]["cpu_s_per_session_minute"]
            print(f"=> one core holds about {per_core:.0f} WebRTC sessions "
                  f"({60 / by['websocket']['cpu_s_per_session_minute']:.0f} WebSocket)")
    finally:
        for p in (gw, up):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
