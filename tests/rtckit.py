"""A WebRTC client for tests and the bench: an aiortc peer in the browser's
role (a microphone track playing given PCM at real time, the ``oai-events``
data channel, the remote track measured), calling the gateway's
``POST /v1/realtime/calls`` over loopback only (its host candidates are
gathered on 127.0.0.1, with the gateway's own ``restrict_ice``)."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCSessionDescription

from openopen8.relay.rtc import new_peer, restrict_ice

RATE = 24000


class PcmTrack(MediaStreamTrack):
    """A microphone: plays ``pcm`` (24 kHz mono s16) at real time, 20 ms a
    frame, then silence; :meth:`play` queues more."""

    kind = "audio"

    def __init__(self, pcm: bytes = b"") -> None:
        super().__init__()
        self.buf = bytearray(pcm)
        self._t0: float | None = None
        self._n = 0

    def play(self, pcm: bytes) -> None:
        self.buf += pcm

    async def recv(self) -> av.AudioFrame:
        n = RATE // 50
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            due = self._t0 + self._n * n / RATE
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
        chunk = bytes(self.buf[:2 * n])
        del self.buf[:2 * n]
        chunk += bytes(2 * n - len(chunk))
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(chunk)
        frame.pts = self._n * n
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


@dataclass
class RtcClient:
    pc: Any
    mic: PcmTrack
    dc: Any
    call_id: str = ""
    location: str = ""
    status: int = 0
    answer: str = ""
    events: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    #: (arrival time, RMS) per 20 ms frame of the gateway's audio
    levels: list[tuple[float, float]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)

    def send(self, ev: dict) -> None:
        self.dc.send(json.dumps(ev))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(self, kind: str, timeout: float = 30.0, after: int = 0) -> dict:
        """The first event of ``kind`` at index >= ``after``."""
        async with asyncio.timeout(timeout):
            while True:
                for ev in self.events[after:]:
                    if ev["type"] == kind:
                        return ev
                await asyncio.sleep(0.01)

    def index(self, kind: str, after: int = 0) -> int:
        return next(i for i, e in enumerate(self.events) if e["type"] == kind and i >= after)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


async def prepare(pcm: bytes = b"") -> tuple[RtcClient, str]:
    """A peer with its microphone and data channel, and its offer (loopback candidates)."""
    pc = new_peer([])
    mic = PcmTrack(pcm)
    pc.addTrack(mic)
    dc = pc.createDataChannel("oai-events")
    c = RtcClient(pc, mic, dc)

    @dc.on("open")
    def _open() -> None:
        c.opened.set()

    @dc.on("message")
    def _msg(msg: str) -> None:
        c.events.append(json.loads(msg))
        c.times.append(time.monotonic())

    @pc.on("track")
    def _track(track: Any) -> None:
        c.tasks.append(asyncio.ensure_future(_measure(track, c)))

    restrict_ice(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    return c, pc.localDescription.sdp


async def accept(c: RtcClient, answer: str, location: str) -> RtcClient:
    c.status, c.answer, c.location = 201, answer, location
    c.call_id = location.rsplit("/", 1)[-1]
    await c.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return c


async def call(http_base: str, token: str, *, model: str, pcm: bytes = b"",
               session: dict | None = None, origin: str | None = None) -> RtcClient:
    """Place a call; the client is returned once the answer is set (check
    ``status`` for refusals: then ``events`` holds the JSON body)."""
    c, offer = await prepare(pcm)
    headers = {"Authorization": f"Bearer {token}"}
    if origin:
        headers["Origin"] = origin
    async with aiohttp.ClientSession() as http:
        url = f"{http_base}/v1/realtime/calls?model={model}"
        if session is None:
            resp = await http.post(url, data=offer,
                                   headers={**headers, "Content-Type": "application/sdp"})
        else:
            form = aiohttp.FormData()
            form.add_field("sdp", offer, content_type="application/sdp")
            form.add_field("session", json.dumps(session), content_type="application/json")
            resp = await http.post(url, data=form, headers=headers)
        status = resp.status
        body = await resp.text()
        location = resp.headers.get("Location", "")
    if status != 201:
        c.status = status
        c.events.append(json.loads(body))
        await c.pc.close()
        return c
    return await accept(c, body, location)


async def _measure(track: Any, c: RtcClient) -> None:
    try:
        while True:
            frame = await track.recv()
            a = frame.to_ndarray().astype(np.float32)
            c.levels.append((time.monotonic(), float(np.sqrt(np.mean(a * a)))))
    except Exception:  # noqa: BLE001 - the track ended
        return


def audible_after(levels: list[tuple[float, float]], t: float, floor: float = 200.0) -> float:
    """Milliseconds of audible audio received after time ``t``."""
    return 20.0 * sum(1 for at, rms in levels if at > t and rms > floor)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


async def _speak_then_hang(http_base: str, token: str, model: str) -> None:
    """For a test that kills this process: call, speak, print ``speaking`` once
    the answer is heard, then wait to be killed."""
    import sys
    pcm = bytes(48 * 300) + _tone(800) + bytes(48 * 1000)
    c = await call(http_base, token, model=model, pcm=pcm)
    if c.status != 201:
        print("refused", c.status, flush=True)
        return
    await c.wait_for("output_audio_buffer.started", 30)
    sys.stdout.write("speaking " + c.call_id + "\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)


def _tone(ms: int, hz: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


if __name__ == "__main__":
    import sys
    asyncio.run(_speak_then_hang(*sys.argv[1:4]))
