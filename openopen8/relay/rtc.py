"""A WebRTC call as the client's endpoint of a relay (aiortc; ``openopen8[webrtc]``).

The relay cannot tell a call from a WebSocket: :class:`RtcEndpoint` turns
what the browser sends into client events and the server events into what
the browser gets, at its edge --

* the ``oai-events`` data channel carries JSON events both ways;
* the microphone track (Opus, 48 kHz) is decoded, resampled to PCM16 24 kHz
  mono and sent on as ``input_audio_buffer.append`` events the gateway makes
  (every :data:`APPEND_MS`): server VAD does the rest, as configured;
* ``response.output_audio.delta`` audio is not sent on the data channel (as
  on OpenAI's WebRTC): it is queued and played into the outgoing track at
  real time, 20 ms a frame, after a small jitter buffer (:data:`JITTER_MS`);
* barge-in -- ``input_audio_buffer.speech_started`` while the assistant is
  heard, or the client's ``output_audio_buffer.clear`` -- drops the queued
  audio at once (the next frame is silence) and sends upstream
  ``conversation.item.truncate`` with the audio actually played, as OpenAI's
  WebRTC endpoint does; the WebRTC-only ``output_audio_buffer.started`` /
  ``stopped`` / ``cleared`` events are made here.

The session's audio format inside the chain is therefore always PCM16 24 kHz
on the client side: ``audio.*.format`` in the client's ``session.update`` is
dropped (the track's codec is Opus whatever the session says).

Sideband WebSockets (``GET /v1/realtime?call_id=``) attach to the endpoint:
they get every server event the data channel gets and their client events
join the client's.

ICE: :func:`restrict_ice` makes aiortc gather host candidates on the
configured addresses and UDP port range only (aioice binds every interface
but loopback, on any port, and has no option for either).
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import logging
import random
import socket
import time
from collections import deque
from typing import Any, Callable

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ..events import Event, new_event_id, wire_event

log = logging.getLogger("openopen8.webrtc")
# aioice logs every connectivity check at INFO: a gateway's log wants one line per call
for _name in ("aioice", "aiortc"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

RATE = 24000                 # the chain's audio: PCM16 mono 24 kHz
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
#: microphone audio is sent on in appends of this length
APPEND_MS = 40
APPEND_BYTES = RATE * APPEND_MS // 1000 * 2
#: a response's audio starts playing once this much is queued (or its audio is complete)
JITTER_MS = 60
JITTER_BYTES = RATE * JITTER_MS // 1000 * 2
#: playback that fell this far behind the clock starts again from now
RESYNC_S = 0.2
_SILENCE = bytes(FRAME_BYTES)
_TIME_BASE = fractions.Fraction(1, RATE)


def _nothing(*_: Any) -> None:
    return None


def ice_servers(configured: list[Any]) -> list[RTCIceServer]:
    """``webrtc_ice_servers`` as aiortc's: each a URL string or a dict with
    ``urls`` (+ ``username``, ``credential`` for TURN).  Always a list: with
    ``None`` aiortc would add Google's public STUN server."""
    out = []
    for s in configured:
        if isinstance(s, str):
            out.append(RTCIceServer(urls=s))
        else:
            out.append(RTCIceServer(urls=s["urls"], username=s.get("username"),
                                    credential=s.get("credential")))
    return out


def new_peer(servers: list[Any]) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(servers)))


# ------------------------------------------------------------------ ICE

def _bind_udp(host: str, port_min: int, port_max: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not port_min:
        ports = [0]
    else:
        ports = list(range(port_min, (port_max or port_min) + 1))
        start = random.randrange(len(ports))
        ports = ports[start:] + ports[:start]
    last: OSError | None = None
    for port in ports:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.setblocking(False)
        return sock
    raise OSError(f"no free UDP port on {host} in {port_min}-{port_max}: {last}")


def _gatherers(pc: RTCPeerConnection) -> list[Any]:
    found = []
    for t in pc.getTransceivers():
        dtls = t.sender.transport or t.receiver.transport
        if dtls is not None:
            found.append(dtls.transport.iceGatherer)
    if pc.sctp is not None:
        found.append(pc.sctp.transport.transport.iceGatherer)
    return found


def restrict_ice(pc: RTCPeerConnection, hosts: list[str], port_min: int = 0,
                 port_max: int = 0) -> None:
    """Gather host candidates on ``hosts`` only (empty: every interface, as
    aioice does), on a UDP port in ``port_min``-``port_max`` (0: any).
    Call after ``setRemoteDescription`` (the transports exist then) and
    before ``setLocalDescription`` (which gathers).  STUN/TURN candidates,
    when servers are configured, are gathered as aioice does."""
    from aioice.candidate import Candidate, candidate_foundation, candidate_priority
    from aioice.ice import (StunProtocol, TransportPolicy, get_host_addresses,
                            server_reflexive_candidate)

    for gatherer in _gatherers(pc):
        conn = gatherer._connection
        if getattr(conn, "_oo8_restricted", False):
            continue
        conn._oo8_restricted = True
        original = conn.get_component_candidates

        async def component_candidates(component: int, addresses: list[str], timeout: int = 5,
                                       conn: Any = conn, original: Any = original) -> list:
            if conn._transport_policy != TransportPolicy.ALL:
                return await original(component=component, addresses=addresses, timeout=timeout)
            loop = asyncio.get_running_loop()
            bind = hosts or get_host_addresses(use_ipv4=True, use_ipv6=True)
            candidates, protocols = [], []
            for host in bind:
                try:
                    sock = _bind_udp(host, port_min, port_max)
                    _, protocol = await loop.create_datagram_endpoint(
                        lambda: StunProtocol(conn), sock=sock)
                except OSError as exc:
                    log.warning("WebRTC: cannot bind a UDP port on %s: %s", host, exc)
                    continue
                addr = protocol.transport.get_extra_info("sockname")
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", addr[0]), component=component,
                    transport="udp", priority=candidate_priority(component, "host"),
                    host=addr[0], port=addr[1], type="host")
                candidates.append(protocol.local_candidate)
                protocols.append(protocol)
            conn._protocols += protocols
            if conn.stun_server:
                tasks = [asyncio.ensure_future(server_reflexive_candidate(p, conn.stun_server))
                         for p in protocols if ":" not in p.local_candidate.host]
                if tasks:
                    done, pending = await asyncio.wait(tasks, timeout=timeout)
                    for t in pending:
                        t.cancel()
                    candidates += [t.result()[0] for t in done if t.exception() is None]
            if conn.turn_server:     # aioice's own TURN allocation (no host addresses)
                candidates += await original(component=component, addresses=[], timeout=timeout)
            return candidates

        conn.get_component_candidates = component_candidates


# ------------------------------------------------------------------ playback

class _Player:
    """Output audio waiting to be played, one segment per delta, in order;
    what each item has had played (bytes)."""

    def __init__(self) -> None:
        self.queue: deque[list[Any]] = deque()   # [response_id, item_id, content_index, bytes, off]
        self.queued = 0
        self.done_items: set[str] = set()        # items whose audio is complete
        self.played: dict[str, int] = {}
        self.playing: str | None = None          # the response being heard
        self.current: tuple[str, str, int] | None = None   # (response, item, content) last played
        self.cut: set[str] = set()               # responses interrupted: later deltas dropped
        #: 20 ms frames of audio played so far, and their count at the last barge-in
        self.audio_frames = 0
        self.frames_at_cut: int | None = None

    def forget(self, keep: int = 16) -> None:
        """Only the last items' bookkeeping is needed (a long call has many)."""
        for d in (self.played,):
            while len(d) > keep:
                del d[next(iter(d))]
        if len(self.done_items) > 4 * keep:
            live = {seg[1] for seg in self.queue} | set(self.played)
            self.done_items &= live
        if len(self.cut) > keep:
            self.cut.clear()    # their late deltas have long arrived

    def busy(self) -> bool:
        """Is the assistant being heard (or about to be)?"""
        return self.playing is not None or self.queued > 0


class OutputTrack(MediaStreamTrack):
    """The gateway's voice: 20 ms PCM16 24 kHz frames at real time (aiortc's
    Opus encoder resamples to 48 kHz), silence when nothing is queued."""

    kind = "audio"

    def __init__(self, pull: Callable[[], bytes]) -> None:
        super().__init__()
        self._pull = pull
        self._start: float | None = None
        self._samples = 0
        #: frames made (for the bench and tests)
        self.frames = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = FRAME_BYTES // 2
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._samples += n
            due = self._start + self._samples / RATE
            if due - now < -RESYNC_S:          # the loop stalled: no burst to catch up
                self._start, self._samples = now, 0
            elif due > now:
                await asyncio.sleep(due - now)
        pcm = self._pull()
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(pcm)
        frame.pts = self.frames * n
        frame.sample_rate = RATE
        frame.time_base = _TIME_BASE
        self.frames += 1
        return frame


# ------------------------------------------------------------------ the endpoint

def _strip_formats(session: Any) -> None:
    """The call's audio is Opus on the wire and PCM16 24 kHz in the chain:
    a session's ``audio.*.format`` does not apply."""
    if isinstance(session, dict) and isinstance(session.get("audio"), dict):
        for side in ("input", "output"):
            part = session["audio"].get(side)
            if isinstance(part, dict):
                part.pop("format", None)


def strip_formats_event(ev: Event) -> Event:
    if ev.type == "session.update":
        data = ev.data
        if isinstance(data, dict) and isinstance(data.get("session"), dict):
            audio = data["session"].get("audio")
            if isinstance(audio, dict) and any(isinstance(audio.get(s), dict) and "format" in audio[s]
                                               for s in ("input", "output")):
                _strip_formats(data["session"])
                ev.touch()
    return ev


class RtcEndpoint:
    """One call, as the relay's client endpoint (see the module doc)."""

    def __init__(self, pc: RTCPeerConnection, call_id: str, *, connect_seconds: float = 30.0,
                 idle_seconds: float = 10.0, first: list[Event] | None = None) -> None:
        self.pc = pc
        self.call_id = call_id
        self.close_code: int | None = None
        self.close_reason = ""
        self.connect_seconds = connect_seconds
        self.idle_seconds = idle_seconds
        self.player = _Player()
        self.track = OutputTrack(self._pull)
        self.sidebands: set[Any] = set()
        #: counters: appends made, audio bytes in, frames of audio played
        self.appends = 0
        self.audio_in = 0
        self._dc: Any = None
        self._dc_wait: list[str] = []        # server events before the data channel opened
        self._on_event: Callable[[Event], None] = self._stash
        self._on_closed: Callable[[], None] = _nothing
        self._early: list[Event] = list(first or [])
        self._ended = False
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        self._active: set[str] = set()      # responses in progress upstream
        self._last_in = time.monotonic()
        self._mic = False
        self.connected = asyncio.get_running_loop().create_future()
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

    def offer_set(self) -> None:
        """The offer is set: the gateway's voice goes on its audio
        transceiver (none in a data-channel-only call: events only)."""
        if any(t.kind == "audio" for t in self.pc.getTransceivers()):
            self.pc.addTrack(self.track)

    # ------------------------------------------------------------ browser side

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != "oai-events" or self._dc is not None:
            return          # like OpenAI: other channels are ignored
        self._dc = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._end(1000, "data channel closed"))
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _flush(self) -> None:
        wait, self._dc_wait = self._dc_wait, []
        for text in wait:
            self._dc.send(text)

    def _on_message(self, msg: Any) -> None:
        self._last_in = time.monotonic()
        if isinstance(msg, bytes):
            ev = Event()
            ev.invalid = "binary"
            self._on_event(ev)
            return
        ev = wire_event(msg)
        if ev.type == "output_audio_buffer.clear":
            self._interrupt(cancel=True)
            return
        self._on_event(strip_formats_event(ev))

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio" and not self._mic:
            self._mic = True
            self._tasks.append(asyncio.ensure_future(self._read_mic(track)))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.connected.done():
            self.connected.set_result(None)
        elif state in ("failed", "closed"):
            self._end(1006 if state == "failed" else 1000, f"WebRTC connection {state}")

    async def _read_mic(self, track: Any) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        buf = bytearray()
        try:
            while True:
                frame = await track.recv()
                self._last_in = time.monotonic()
                for f in resampler.resample(frame):
                    buf += bytes(f.planes[0])[:f.samples * 2]
                if len(buf) >= APPEND_BYTES:
                    self._append(bytes(buf))
                    buf.clear()
        except (MediaStreamError, asyncio.CancelledError):
            pass

    def _append(self, pcm: bytes) -> None:
        self.appends += 1
        self.audio_in += len(pcm)
        self._on_event(wire_event('{"type":"input_audio_buffer.append","audio":"'
                                  + base64.b64encode(pcm).decode() + '"}'))

    async def watch(self) -> None:
        """The connect watchdog, then liveness: a call that does not connect
        within ``connect_seconds``, or whose microphone is silent for
        ``idle_seconds`` -- a browser sends 50 packets a second while it
        lives, muted or not -- has vanished.  (A call without a microphone is
        ended by ICE consent failure: the connection state goes ``failed``.)"""
        try:
            await asyncio.wait_for(asyncio.shield(self.connected), self.connect_seconds)
        except TimeoutError:
            self._end(1006, "WebRTC call did not connect")
            return
        self._last_in = time.monotonic()     # media starts now
        step = min(1.0, self.idle_seconds / 4)
        while not self._ended:
            await asyncio.sleep(step)
            if self._mic and time.monotonic() - self._last_in > self.idle_seconds:
                self._end(1006, "WebRTC peer vanished")
                return

    def start(self) -> None:
        self._tasks.append(asyncio.ensure_future(self.watch()))

    def _end(self, code: int, reason: str) -> None:
        """The browser side is over: the relay is told (it closes us)."""
        if self._ended:
            return
        self._ended = True
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        log.info("call %s ended: %s", self.call_id, reason)
        self._on_closed()

    def hang_up(self) -> None:
        self._end(1000, "hung up")

    # ------------------------------------------------------------ playback

    def _to_client(self, data: dict[str, Any]) -> None:
        """A WebRTC-only server event the gateway makes."""
        data.setdefault("event_id", new_event_id())
        self._deliver(Event.from_data(data))

    def _deliver(self, ev: Event) -> None:
        text = ev.text
        dc = self._dc
        if dc is not None and dc.readyState == "open":
            dc.send(text)
        elif not self._ended and len(self._dc_wait) < 1000:   # kept for the channel to open
            self._dc_wait.append(text)
        for sb in tuple(self.sidebands):
            sb.send(ev)

    def _pull(self) -> bytes:
        """The next 20 ms to play."""
        p = self.player
        if not p.queued:
            if p.playing is not None and (p.current is None or p.current[1] in p.done_items):
                rid, p.playing = p.playing, None
                self._to_client({"type": "output_audio_buffer.stopped", "response_id": rid})
            return _SILENCE
        head = p.queue[0]
        if p.playing is None:
            if p.queued < JITTER_BYTES and head[1] not in p.done_items:
                return _SILENCE        # the jitter buffer fills
            p.playing = head[0]
            self._to_client({"type": "output_audio_buffer.started", "response_id": head[0]})
        out = bytearray()
        while len(out) < FRAME_BYTES and p.queue:
            seg = p.queue[0]
            rid, item, ci, data, off = seg
            take = data[off:off + FRAME_BYTES - len(out)]
            out += take
            seg[4] = off + len(take)
            p.played[item] = p.played.get(item, 0) + len(take)
            p.current = (rid, item, ci)
            p.queued -= len(take)
            if seg[4] >= len(data):
                p.queue.popleft()
        p.audio_frames += 1
        if len(out) < FRAME_BYTES:
            out += bytes(FRAME_BYTES - len(out))
        return bytes(out)

    def _interrupt(self, cancel: bool) -> None:
        """Barge-in: what is queued is dropped now; the item is truncated
        upstream to the audio heard; ``output_audio_buffer.cleared``."""
        p = self.player
        if not p.busy():
            if cancel:   # nothing is heard: still tell the client its clear was done
                self._to_client({"type": "output_audio_buffer.cleared", "response_id": None})
            return
        target = p.queue[0] if p.queue else None
        rid, item, ci = (target[0], target[1], target[2]) if target else p.current
        unheard = p.queued > 0 or item not in p.done_items
        p.queue.clear()
        p.queued = 0
        p.frames_at_cut = p.audio_frames
        p.cut.add(rid)
        p.playing = None
        if cancel and rid in self._active:
            self._on_event(Event.from_data({"type": "response.cancel", "event_id": new_event_id()}))
        if unheard:
            self._on_event(Event.from_data({
                "type": "conversation.item.truncate", "event_id": new_event_id(),
                "item_id": item, "content_index": ci,
                "audio_end_ms": p.played.get(item, 0) * 1000 // (RATE * 2)}))
        self._to_client({"type": "output_audio_buffer.cleared", "response_id": rid})

    # ------------------------------------------------------------ relay side

    def _stash(self, ev: Event) -> None:
        self._early.append(ev)

    def attach(self, on_event: Callable[[Event], None], on_closed: Callable[[], None],
               on_writable: Callable[[bool], None]) -> None:
        early, self._early = self._early, []
        self._on_closed = on_closed
        for ev in early:
            on_event(ev)
        self._on_event = on_event
        if self._ended:
            on_closed()

    def send(self, ev: Event) -> None:
        t = ev.type
        p = self.player
        if t == "response.output_audio.delta":
            d = ev.data
            rid = d.get("response_id")
            if rid in p.cut or self._ended:
                return
            try:
                pcm = base64.b64decode(d.get("delta") or "")
            except ValueError:
                return
            pcm = pcm[:len(pcm) - len(pcm) % 2]
            p.queue.append([rid, d.get("item_id"), d.get("content_index", 0), pcm, 0])
            p.queued += len(pcm)
            return
        if t == "response.output_audio.done":
            p.done_items.add(ev.data.get("item_id"))
            p.forget()
        elif t == "response.created":
            rid = (ev.data.get("response") or {}).get("id")
            if rid:
                self._active.add(rid)
        elif t == "response.done":
            rid = (ev.data.get("response") or {}).get("id")
            self._active.discard(rid)
            for seg in p.queue:       # no output_audio.done came (cancelled): it is complete
                if seg[0] == rid:
                    p.done_items.add(seg[1])
            if p.current and p.current[0] == rid:
                p.done_items.add(p.current[1])
        elif t == "input_audio_buffer.speech_started" and p.busy():
            self._deliver(ev)              # then what it caused, in OpenAI's order
            self._interrupt(cancel=False)
            return
        self._deliver(ev)

    async def attach_sideband(self, ws: Any) -> None:
        """A server WebSocket joins the call until it or the call ends: it
        gets what the data channel gets, and its client events join the
        client's."""
        if self._ended:
            await ws.close(1000, "call ended")
            return
        gone = asyncio.get_running_loop().create_future()
        self.sidebands.add(ws)

        def closed() -> None:
            self.sidebands.discard(ws)
            if not gone.done():
                gone.set_result(None)

        def from_sideband(ev: Event) -> None:
            if not self._ended:
                self._on_event(strip_formats_event(ev))

        ws.attach(from_sideband, closed, _nothing)
        try:
            await gone
        finally:
            self.sidebands.discard(ws)

    def pause_reading(self) -> None:
        pass      # real-time audio and small events: nothing to hold back

    def resume_reading(self) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._closing:
            return
        self._closing = True
        self._ended = True
        for t in self._tasks:
            t.cancel()
        self.track.stop()
        dc = self._dc
        if dc is not None and dc.readyState == "open":   # the last events (an error) go first
            for _ in range(50):
                if not dc.bufferedAmount:
                    break
                await asyncio.sleep(0.02)
        for sb in tuple(self.sidebands):
            await sb.close(code if code != 1006 else 1000, reason)
        self.sidebands.clear()
        try:
            await asyncio.wait_for(self.pc.close(), 5)
        except Exception:  # noqa: BLE001 - a stuck ICE check: the peer is gone anyway
            log.info("call %s: the peer connection did not close cleanly", self.call_id)
