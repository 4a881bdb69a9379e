"""The load generator: a worker process driven over a multiprocessing pipe.

It runs in its own process (picows client, callbacks only), so its CPU is
never charged to the relay under test.  Commands (dicts) and answers:

* ``connect``: open ``n`` sessions to ``url`` as ``group`` (one group per
  target; several targets can be loaded at once) -> ``{"ok", "failed", "error"}``
* ``run``: from the absolute ``time.monotonic`` instant ``t0`` on, either
  stream (``mode="rate"``: every session sends one 20 ms audio append every
  20 ms, phases spread over the 20 ms) or flood (``mode="flood"``: each
  session keeps ``window`` events in flight); round trips whose *send* time
  falls in the measuring window ``[t0+warm, t0+warm+dur)`` are the samples.
  Answers, per group, the round trips (ns), counts and the worker's own CPU.
* ``close``: close every session; ``quit``: end the worker.

``time.monotonic`` is system-wide on Linux, so the orchestrator and every
worker share one clock and read CPU counters at the same instants.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from array import array
from typing import Any

MAX_FRAME = 16 * 1024 * 1024
TS_RE = re.compile(rb'"event_id"\s*:\s*"[a-z]+_(\d+)')
FRAME_PERIOD = 0.020


def percentiles(samples: array, qs=(50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles in milliseconds of round trips in nanoseconds."""
    if not samples:
        return {}
    s = sorted(samples)
    n = len(s)
    out = {f"p{q:g}": s[min(n - 1, int(q / 100 * n))] / 1e6 for q in qs}
    out["max"] = s[-1] / 1e6
    out["mean"] = sum(s) / n / 1e6
    return out


class _Stats:
    __slots__ = ("w0", "w1", "samples", "sent_in_window", "received", "recv_in_window",
                 "other", "late", "disconnects")

    def __init__(self) -> None:
        self.reset(0, 0)
        self.disconnects = 0

    def reset(self, w0: int, w1: int) -> None:
        self.w0, self.w1 = w0, w1
        self.samples = array("q")
        self.sent_in_window = 0
        self.received = 0
        self.recv_in_window = 0
        self.other = 0
        self.late = 0


def _make_client(stats: _Stats, audio: list[bytes]):
    from picows import WSListener, WSMsgType

    TEXT = WSMsgType.TEXT
    mono = time.monotonic_ns
    search = TS_RE.search
    head = b'{"type":"input_audio_buffer.append","event_id":"evt_'
    mid = b'","audio":"'
    echo_head = b'{"type":"bench.echo","event_id":"evt_'
    n_audio = len(audio)

    class Client(WSListener):
        __slots__ = ("t", "i", "flood", "until", "echo", "closed", "buf")

        def __init__(self) -> None:
            self.t = None
            self.i = 0
            self.flood = False      # flood mode: answer every reply with a new send
            self.until = 0          # flood: stop sending at this monotonic_ns
            self.echo = False       # send bench.echo instead of audio appends
            self.closed = False
            self.buf = None

        def on_ws_connected(self, t) -> None:
            self.t = t

        def send(self) -> None:
            now = mono()
            if self.echo:
                msg = echo_head + str(now).encode() + b'"}'
            else:
                i = self.i
                self.i = i + 1 if i + 1 < n_audio else 0
                msg = b"".join((head, str(now).encode(), mid, audio[i], b'"}'))
            st = stats
            if st.w0 <= now < st.w1:
                st.sent_in_window += 1
            self.t.send(TEXT, msg)

        def on_ws_frame(self, t, f) -> None:
            mt = f.msg_type
            if mt == TEXT or mt == WSMsgType.CONTINUATION:
                now = mono()
                if not f.fin or self.buf is not None:
                    if self.buf is None:
                        self.buf = bytearray()
                    self.buf += f.get_payload_as_memoryview()
                    if not f.fin:
                        return
                    payload, self.buf = bytes(self.buf), None
                else:
                    payload = f.get_payload_as_bytes()
                m = search(payload)
                st = stats
                if m is None:
                    st.other += 1
                    return
                sent = int(m.group(1))
                st.received += 1
                if st.w0 <= now < st.w1:
                    st.recv_in_window += 1
                if st.w0 <= sent < st.w1:
                    st.samples.append(now - sent)
                elif sent >= st.w1:
                    st.late += 1
                if self.flood and now < self.until:
                    self.send()
            elif mt == WSMsgType.CLOSE:
                self.closed = True
                t.disconnect()

        def on_ws_disconnected(self, t) -> None:
            if not self.closed:
                stats.disconnects += 1
            self.closed = True

    return Client


class _Group:
    """The sessions one worker holds to one target, with their own counters."""

    def __init__(self, audio: list[bytes]) -> None:
        self.stats = _Stats()
        self.Client = _make_client(self.stats, audio)
        self.sessions: list[Any] = []


class Worker:
    def __init__(self) -> None:
        import psutil

        from standin import tone_frames

        self.me = psutil.Process()
        self.audio = tone_frames(440.0)
        self.groups: dict[str, _Group] = {}

    async def connect(self, url: str, headers: dict[str, str], n: int, group: str = "",
                      concurrency: int = 32) -> dict[str, Any]:
        from picows import ws_connect

        g = self.groups.get(group)
        if g is None:
            g = self.groups[group] = _Group(self.audio)
        sem = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one():
            async with sem:
                try:
                    _, client = await ws_connect(g.Client, url, extra_headers=headers or None,
                                                 max_frame_size=MAX_FRAME,
                                                 websocket_handshake_timeout=30)
                    return client
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return None

        got = await asyncio.gather(*(one() for _ in range(n)))
        ok = [c for c in got if c is not None]
        g.sessions.extend(ok)
        return {"ok": len(ok), "failed": n - len(ok), "error": errors[0] if errors else None}

    async def run(self, mode: str, t0: float, warm: float, dur: float, drain: float,
                  first_index: int = 0, total: int = 0, window: int = 32,
                  echo: bool = False) -> dict[str, Any]:
        """Load every group at once; the answer has one entry per group."""
        loop = asyncio.get_running_loop()
        w0 = int((t0 + warm) * 1e9)
        w1 = int((t0 + warm + dur) * 1e9)
        sessions = []
        for g in self.groups.values():
            g.stats.reset(w0, w1)
            g.stats.disconnects = 0
            sessions += [s for s in g.sessions if not s.closed]
        for s in sessions:
            s.echo = echo
            s.flood = False
        end_send = t0 + warm + dur
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = self.me.cpu_times()
        if mode == "flood":
            for s in sessions:
                s.flood = True
                s.until = int(end_send * 1e9)
                for _ in range(window):
                    s.send()
        else:
            # every session sends every 20 ms; session g of `total` at phase g/total
            total = max(total, first_index + len(sessions))
            slots: dict[int, list] = {}
            nslots = 20
            for k, s in enumerate(sessions):
                g = first_index + k
                slots.setdefault(int(g * nslots / total) % nslots, []).append(s)

            def tick(slot: int, when: float, group: list) -> None:
                if when >= end_send:
                    return
                for s in group:
                    if not s.closed:
                        s.send()
                nxt = when + FRAME_PERIOD
                loop.call_at(_loop_time(loop, nxt), tick, slot, nxt, group)

            for slot, group in slots.items():
                when = t0 + slot * FRAME_PERIOD / nslots
                loop.call_at(_loop_time(loop, when), tick, slot, when, group)
        await asyncio.sleep(max(0.0, end_send + drain - time.monotonic()))
        for s in sessions:
            s.flood = False
        cpu1 = self.me.cpu_times()
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        out = {}
        for name, g in self.groups.items():
            st = g.stats
            out[name] = {
                "sessions": sum(1 for s in g.sessions if not s.closed),
                "sent_in_window": st.sent_in_window,
                "samples_ns": st.samples.tobytes(),
                "received": st.received,
                "recv_in_window": st.recv_in_window,
                "other": st.other,
                "disconnects": st.disconnects,
                "cpu": cpu,
            }
        return out

    async def close(self) -> dict[str, Any]:
        every = [s for g in self.groups.values() for s in g.sessions]
        for s in every:
            if not s.closed:
                try:
                    s.t.send_close(1000)
                except Exception:  # noqa: BLE001
                    pass
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(not s.closed for s in every):
            await asyncio.sleep(0.02)
        for s in every:
            s.t.disconnect()
        self.groups = {}
        return {"closed": len(every)}


def _loop_time(loop: asyncio.AbstractEventLoop, mono: float) -> float:
    """The event loop's clock is time.monotonic on the default loop."""
    return mono - time.monotonic() + loop.time()


def worker_main(conn) -> None:
    """Entry point of a load-generator process (multiprocessing, spawn)."""
    try:
        os.nice(0)
    except OSError:  # pragma: no cover
        pass

    async def main() -> None:
        w = Worker()
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            op = cmd.pop("op")
            if op == "quit":
                await w.close()
                conn.send({"ok": True})
                return
            try:
                result = await getattr(w, op)(**cmd)
            except Exception as exc:  # noqa: BLE001
                result = {"exception": f"{type(exc).__name__}: {exc}"}
            conn.send(result)

    asyncio.run(main())
