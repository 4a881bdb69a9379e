"""A stand-in for OpenAI's Realtime service (GA dialect), for tests.

It behaves like the live service as described in ``/work/shared/reference/protocol.md``:

* every upgrade answers 101; a bad/missing key, a bad/missing model or the beta header is
  reported as an ``error`` frame followed by close 3000 (auth) or 4000 (request shape);
* ``session.update`` is validated strictly (``session.type`` required, beta or unknown fields
  rejected with ``unknown_parameter``, the whole update discarded, rate must be 24000);
* responses are scripted (:class:`Script`) and emitted in the GA order of §7;
* Azure paths: ``/openai/v1/realtime?model=D`` (GA) and
  ``/openai/realtime?api-version=V&deployment=D``, which speaks the *beta* dialect (beta event
  names, flat session).  The session is kept internally in GA shape and rendered per dialect.

Server VAD (``turn_detection`` server_vad or semantic_vad) is deterministic: appended audio is
cut into 20 ms windows; a window is *speech* when its RMS (int16 scale, after G.711 decoding)
exceeds ``threshold * VAD_FULL_SCALE`` (threshold 0.5 → RMS 1000).  The first speech window
sends ``speech_started`` (``audio_start_ms`` = window start − ``prefix_padding_ms``, floored at
0); once ``silence_duration_ms`` of consecutive silent windows follow, ``speech_stopped``
(``audio_end_ms`` = end of the last window processed) and an automatic commit of the whole
buffer; then a response if ``create_response``.  ``speech_started`` cancels an active response
(reason ``turn_detected``) if ``interrupt_response``.  Times count only whole windows.

Typical use::

    async with StandIn(ping_interval=0.2) as up:          # or a fixture yielding it
        up.scripts.append(Script(text="It is sunny.", audio_deltas=2))
        ...  # point the gateway (or the SDK: base_url=up.base_url) at up.url
        s = await up.session()                              # the latest connection
        assert s.received[0]["type"] == "session.update" and len(s.input_audio) > 0

Not modelled: input ``idle_timeout_ms``, ``response.create`` ``input``/``instructions`` (the
script decides what is said), transcription sessions, MCP tools, the 60-minute cap.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
import math
import secrets
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import WSMsgType, web

from openopen8.events import peek_type

DEFAULT_MODELS = frozenset({
    "gpt-realtime", "gpt-realtime-mini", "gpt-realtime-2025-08-28",
    "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview",
})
MAX_FRAME = 16 * 1024 * 1024
VAD_FULL_SCALE = 2000
PCM24 = {"type": "audio/pcm", "rate": 24000}
BETA_FORMATS = {"pcm16": PCM24, "g711_ulaw": {"type": "audio/pcmu"},
                "g711_alaw": {"type": "audio/pcma"}}
GA_TO_BETA_FORMAT = {v["type"]: k for k, v in BETA_FORMATS.items()}
GA_CLIENT_TYPES = (
    "session.update", "session.close", "input_audio_buffer.append",
    "session.input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.truncate", "conversation.item.delete",
    "conversation.item.retrieve", "response.create", "response.cancel",
)
GA_SESSION_KEYS = {"type", "model", "output_modalities", "instructions", "audio", "tools",
                   "tool_choice", "max_output_tokens", "tracing", "truncation", "prompt",
                   "include", "reasoning", "parallel_tool_calls"}
AUDIO_KEYS = {"input": {"format", "noise_reduction", "transcription", "turn_detection"},
              "output": {"format", "voice", "speed"}}
TD_KEYS = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms",
           "create_response", "interrupt_response", "eagerness"}
TD_DEFAULTS = {
    "server_vad": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                   "silence_duration_ms": 200, "idle_timeout_ms": None,
                   "create_response": True, "interrupt_response": True},
    "semantic_vad": {"type": "semantic_vad", "eagerness": "auto",
                     "create_response": True, "interrupt_response": True},
}
BETA_SESSION_KEYS = {"model", "modalities", "instructions", "voice", "input_audio_format",
                     "output_audio_format", "input_audio_transcription",
                     "input_audio_noise_reduction", "turn_detection", "tools", "tool_choice",
                     "temperature", "max_response_output_tokens", "speed", "tracing",
                     "truncation", "prompt", "include"}
GA_RESPONSE_KEYS = {"output_modalities", "instructions", "audio", "tools", "tool_choice",
                    "max_output_tokens", "metadata", "conversation", "input", "prompt",
                    "parallel_tool_calls", "reasoning"}
BETA_RESPONSE_KEYS = {"modalities", "instructions", "voice", "output_audio_format", "tools",
                      "tool_choice", "temperature", "max_response_output_tokens", "metadata",
                      "conversation", "input"}
#: GA event → beta event name (None: not sent in beta)
BETA_NAMES = {
    "conversation.item.added": "conversation.item.created", "conversation.item.done": None,
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}


def usage(input_text: int = 59, input_audio: int = 73, cached_text: int = 0,
          cached_audio: int = 64, output_text: int = 41, output_audio: int = 147) -> dict:
    """A GA ``usage`` object (§4) with consistent totals (defaults: the live capture)."""
    inp, out = input_text + input_audio, output_text + output_audio
    return {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
            "input_token_details": {
                "text_tokens": input_text, "audio_tokens": input_audio, "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio,
                                          "image_tokens": 0}},
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio}}


@dataclass
class Script:
    """What the next response does.  ``StandIn.script`` is the default; ``StandIn.scripts``
    (a deque) is consumed first, one Script per response."""
    text: str = "Hello from the stand-in."  # said (transcript) or written (text mode), split on words
    audio_deltas: int = 3          # output_audio.delta events (audio mode)
    audio_delta_ms: int = 100      # audio per delta
    delay: float = 0.0             # seconds before each event after response.created
    usage: dict | None = None      # default: usage()
    #: (name, arguments JSON): answer with a function call when tools are configured (session or
    #: response.create) and the last conversation item is not a function_call_output
    function_call: tuple[str, str] | None = None
    close_after: str | None = None  # close right after the first event of this (GA) type
    close_code: int | None = None   # None: drop the TCP connection without a close frame
    close_reason: str = ""
    duplicate_done: bool = False    # send response.done twice
    rate_limits: bool = True        # send rate_limits.updated after response.done


class ClientError(Exception):
    def __init__(self, message: str, code: str | None, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class _Cancelled(Exception):
    pass


class _Closed(Exception):
    pass


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# -- audio -----------------------------------------------------------------------------------

def _ulaw(b: int) -> int:
    b = ~b & 0xFF
    x = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84
    return -x if b & 0x80 else x


def _alaw(b: int) -> int:
    b ^= 0x55
    exp, mant = (b >> 4) & 7, b & 0x0F
    x = (mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1)
    return x if b & 0x80 else -x


G711_DECODE = {"audio/pcmu": [_ulaw(b) for b in range(256)],
               "audio/pcma": [_alaw(b) for b in range(256)]}


def _nearest_encoder(table: list[int]) -> list[int]:
    """A table int16 → code by nearest decoded value (over a coarse 16-bit grid)."""
    order = sorted(range(256), key=table.__getitem__)
    out, j = [], 0
    for v in range(-32768, 32768, 4):
        while j + 1 < 256 and abs(table[order[j + 1]] - v) <= abs(table[order[j]] - v):
            j += 1
        out.append(order[j])
    return out


G711_ENCODE = {k: _nearest_encoder(t) for k, t in G711_DECODE.items()}


def bytes_per_ms(fmt: dict) -> int:
    return 48 if fmt["type"] == "audio/pcm" else 8


def decode(fmt: dict, data: bytes) -> array:
    """Audio bytes in ``fmt`` → int16 samples (24 kHz for pcm, 8 kHz for G.711)."""
    if fmt["type"] == "audio/pcm":
        return array("h", data[: len(data) // 2 * 2])
    table = G711_DECODE[fmt["type"]]
    return array("h", (table[b] for b in data))


def tone(fmt: dict, ms: int, start: int = 0, hz: float = 440.0, amp: int = 8000) -> bytes:
    """``ms`` of a sine tone in ``fmt``, starting at sample ``start`` (phase-continuous)."""
    rate = 24000 if fmt["type"] == "audio/pcm" else 8000
    n = rate * ms // 1000
    samples = [int(amp * math.sin(2 * math.pi * hz * (start + i) / rate)) for i in range(n)]
    if fmt["type"] == "audio/pcm":
        return array("h", samples).tobytes()
    enc = G711_ENCODE[fmt["type"]]
    return bytes(enc[(s + 32768) >> 2] for s in samples)


def _rms(samples: array) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


# -- validation ------------------------------------------------------------------------------

def _check_keys(obj: Any, allowed: set[str], path: str) -> dict:
    if not isinstance(obj, dict):
        raise ClientError(f"Invalid type for '{path}': expected an object.", "invalid_type", path)
    for k in obj:
        if k not in allowed:
            raise ClientError(f"Unknown parameter: '{path}.{k}'.", "unknown_parameter", f"{path}.{k}")
    return obj


def _check_format(fmt: Any, path: str) -> dict:
    _check_keys(fmt, {"type", "rate"}, path)
    t = fmt.get("type")
    if t not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
        raise ClientError(f"Invalid value: '{t}'. Supported values are: 'audio/pcm', 'audio/pcmu', "
                          "and 'audio/pcma'.", "invalid_value", f"{path}.type")
    if t != "audio/pcm":
        return {"type": t}
    rate = fmt.get("rate", 24000)
    if rate != 24000:
        low = rate < 24000
        raise ClientError(
            f"Invalid '{path}.rate': integer {'below minimum' if low else 'above maximum'} value. "
            f"Expected a value {'>=' if low else '<='} 24000, but got {rate} instead.",
            "integer_below_min_value" if low else "integer_above_max_value", f"{path}.rate")
    return dict(PCM24)


def _check_turn_detection(td: Any, current: dict | None, path: str) -> dict | None:
    if td is None:
        return None
    _check_keys(td, TD_KEYS, path)
    t = td.get("type", current["type"] if current else None)
    if t not in TD_DEFAULTS:
        raise ClientError(f"Invalid value: '{t}'. Supported values are: 'server_vad' and "
                          "'semantic_vad'.", "invalid_value", f"{path}.type")
    base = current if current and current["type"] == t else TD_DEFAULTS[t]
    return {**base, **td, "type": t}


def merged_session(session: dict, upd: dict) -> dict:
    """The GA session ``session`` updated with the GA ``upd`` (raises ClientError, never partial)."""
    _check_keys(upd, GA_SESSION_KEYS, "session")
    new = copy.deepcopy(session)
    for key, value in upd.items():
        if key == "audio":
            for side, conf in _check_keys(value, set(AUDIO_KEYS), "session.audio").items():
                for k, v in _check_keys(conf, AUDIO_KEYS[side], f"session.audio.{side}").items():
                    path = f"session.audio.{side}.{k}"
                    if k == "format":
                        v = _check_format(v, path)
                    elif k == "turn_detection":
                        v = _check_turn_detection(v, new["audio"][side][k], path)
                    new["audio"][side][k] = v
        elif key != "type":
            new[key] = value
    if new["output_modalities"] not in (["audio"], ["text"]):
        raise ClientError("Invalid value for 'session.output_modalities': use ['audio'] or ['text'].",
                          "invalid_value", "session.output_modalities")
    return new


def beta_to_ga(upd: dict) -> dict:
    """A flat beta session update as a GA update (unknown keys raise ``unknown_parameter``)."""
    _check_keys(upd, BETA_SESSION_KEYS, "session")
    ga: dict[str, Any] = {"type": "realtime"}
    a_in: dict[str, Any] = {}
    a_out: dict[str, Any] = {}
    moves = {"voice": (a_out, "voice"), "speed": (a_out, "speed"),
             "input_audio_transcription": (a_in, "transcription"),
             "input_audio_noise_reduction": (a_in, "noise_reduction"),
             "turn_detection": (a_in, "turn_detection"),
             "max_response_output_tokens": (ga, "max_output_tokens")}
    for k, v in upd.items():
        if k == "modalities":
            ga["output_modalities"] = ["text"] if v == ["text"] else ["audio"]
        elif k in ("input_audio_format", "output_audio_format"):
            if v not in BETA_FORMATS:
                raise ClientError(f"Invalid value: '{v}'. Supported values are: 'pcm16', 'g711_ulaw', "
                                  "and 'g711_alaw'.", "invalid_value", f"session.{k}")
            (a_in if k.startswith("input") else a_out)["format"] = BETA_FORMATS[v]
        elif k in moves:
            target, name = moves[k]
            target[name] = v
        elif k != "temperature":
            ga[k] = v
    if a_in or a_out:
        ga["audio"] = {**({"input": a_in} if a_in else {}), **({"output": a_out} if a_out else {})}
    return ga


def default_session(model: str) -> dict:
    return {
        "type": "realtime", "object": "realtime.session", "id": _id("sess"), "model": model,
        "output_modalities": ["audio"], "instructions": "You are the openopen8 stand-in.",
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
        "truncation": "auto", "prompt": None, "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {"format": dict(PCM24), "transcription": None, "noise_reduction": None,
                      "turn_detection": dict(TD_DEFAULTS["server_vad"])},
            "output": {"format": dict(PCM24), "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }


# -- one connection --------------------------------------------------------------------------

@dataclass
class _Response:
    id: str
    script: Script
    obj: dict
    in_conversation: bool
    modalities: list
    fmt: dict
    function_call: bool
    cancel_reason: str | None = None
    wake: asyncio.Event | None = None
    task: asyncio.Task | None = None

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self.wake.set()


class Session:
    """One upgraded connection.  Tests read ``received`` (parsed client events, in order, except
    ``bench.echo``), ``sent`` (server events), ``input_audio`` (every appended byte, in the input
    format declared at the time: ``input_formats`` lists them), ``items`` (the conversation),
    ``headers``/``query``/``path``/``protocols`` of the upgrade, ``pongs`` (monotonic times),
    ``close_code`` (the client's or ours) and ``closed`` (an asyncio.Event).  ``send(dict)`` pushes
    any event; ``kill(code)`` closes (``code=None``: no close frame)."""

    def __init__(self, standin: "StandIn", request: web.Request, ws: web.WebSocketResponse,
                 beta: bool) -> None:
        self.standin, self.request, self.ws, self.beta = standin, request, ws, beta
        self.path, self.query, self.headers = request.path, dict(request.query), dict(request.headers)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        self.protocols = [p.strip() for p in offered.split(",") if p.strip()]
        self.session: dict = {}
        self.temperature = 0.8
        self.received: list[dict] = []
        self.sent: list[dict] = []
        self.input_audio = bytearray()
        self.input_formats: list[dict] = []
        self.items: list[dict] = []
        self.item_audio: dict[str, bytearray] = {}  # item id → audio bytes (user and model)
        self.item_format: dict[str, dict] = {}  # item id → format of item_audio
        self.pongs: list[float] = []
        self.pings_sent = 0
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.active: _Response | None = None
        self.conversation_id = _id("conv")
        self._buffer = bytearray()
        self._vad_rest = bytearray()
        self._vad = {"ms": 0, "speaking": False, "silence": 0, "item": None}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    # sending ----------------------------------------------------------------------------
    async def send(self, event: dict) -> str | None:
        """Send an event (``type`` first, ``event_id`` added); in beta, GA names are mapped.
        Returns the type sent (None if the dialect drops it or the socket is gone)."""
        etype = event["type"]
        if self.beta and etype in BETA_NAMES:
            etype = BETA_NAMES[etype]
            if etype is None:
                return None
        data = {"type": etype, "event_id": event.get("event_id") or _id("event")}
        data.update((k, v) for k, v in event.items() if k not in ("type", "event_id"))
        text = orjson.dumps(data).decode()
        if self.ws.closed:
            return None
        async with self._lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return None
        self.sent.append(orjson.loads(text))  # a copy: items change after they are sent
        return etype

    async def error(self, message: str, code: str | None, param: str | None = None,
                    event_id: str | None = None, type: str = "invalid_request_error") -> None:
        await self.send({"type": "error", "error": {"type": type, "code": code, "message": message,
                                                    "param": param, "event_id": event_id}})

    async def kill(self, code: int | None = None, reason: str = "") -> None:
        """Close with ``code``, or (None) drop the TCP connection with no close frame."""
        if code is None:
            self.close_code = 1006
            if self.request.transport is not None:
                self.request.transport.close()
        else:
            self.close_code = code
            await self.ws.close(code=code, message=reason.encode())

    def session_view(self) -> dict:
        s = self.session
        if not self.beta:
            return s
        a_in, a_out = s["audio"]["input"], s["audio"]["output"]
        return {
            "object": "realtime.session", "id": s["id"], "expires_at": s["expires_at"],
            "model": s["model"],
            "modalities": ["text"] if s["output_modalities"] == ["text"] else ["audio", "text"],
            "instructions": s["instructions"], "voice": a_out["voice"],
            "input_audio_format": GA_TO_BETA_FORMAT[a_in["format"]["type"]],
            "output_audio_format": GA_TO_BETA_FORMAT[a_out["format"]["type"]],
            "input_audio_transcription": a_in["transcription"],
            "input_audio_noise_reduction": a_in["noise_reduction"],
            "turn_detection": a_in["turn_detection"],
            "tools": s["tools"], "tool_choice": s["tool_choice"],
            "temperature": self.temperature, "max_response_output_tokens": s["max_output_tokens"],
            "speed": a_out["speed"], "tracing": s["tracing"], "truncation": s["truncation"],
            "prompt": s["prompt"], "include": s["include"],
        }

    # lifecycle --------------------------------------------------------------------------
    async def run(self, refusal: tuple[int, str | None, str] | None, model: str) -> None:
        try:
            if refusal is not None:
                close, code, message = refusal
                await self.error(message, code)
                await self.kill(close, "invalid_request_error" + (f".{code}" if code else ""))
                return
            self.session = default_session(model)
            await self.send({"type": "session.created", "session": self.session_view()})
            if self.standin.ping_interval:
                self._spawn(self._pinger())
            await self._read_loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self.close_code is None:
                self.close_code = self.ws.close_code
            self.closed.set()

    def _spawn(self, coro: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pinger(self) -> None:
        while not self.ws.closed:
            await asyncio.sleep(self.standin.ping_interval)
            try:
                await self.ws.ping(b"standin")
                self.pings_sent += 1
            except (ConnectionError, RuntimeError):
                return

    async def _read_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await self.error("Expected a text WebSocket message, but got a binary message.",
                                 "invalid_event")
            elif msg.type is WSMsgType.PING:
                await self.ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                self.pongs.append(time.monotonic())
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                return

    async def _on_text(self, text: str) -> None:
        ev = None
        if peek_type(text) != "bench.echo":  # the echo benchmark skips parsing when it can
            try:
                ev = orjson.loads(text)
            except orjson.JSONDecodeError:
                await self.error("We could not parse the JSON body of your request.", "invalid_json")
                return
            if not isinstance(ev, dict):
                await self.error("The event must be a JSON object.", "invalid_event")
                return
        if ev is None or ev.get("type") == "bench.echo":
            async with self._lock:
                await self.ws.send_str(text)
            return
        self.received.append(ev)
        hook = self.standin.on_event
        if hook is not None:
            handled = hook(self, ev)
            if inspect.isawaitable(handled):
                handled = await handled
            if handled:
                return
        etype, client_id = ev.get("type"), ev.get("event_id")
        try:
            if not isinstance(etype, str):
                raise ClientError("The 'type' field is missing.", "invalid_event")
            if etype not in GA_CLIENT_TYPES or (self.beta and etype.startswith("session.")
                                                and etype != "session.update"):
                supported = ", ".join(f"'{t}'" for t in GA_CLIENT_TYPES)
                raise ClientError(f"Invalid value: '{etype}'. Supported values are: {supported}.",
                                  "invalid_value", "type")
            if etype == "session.input_audio_buffer.append":  # undocumented alias
                etype = "input_audio_buffer.append"
            await getattr(self, "_on_" + etype.replace(".", "_"))(ev)
        except ClientError as e:
            await self.error(e.message, e.code, e.param, client_id)

    # session ----------------------------------------------------------------------------
    async def _on_session_update(self, ev: dict) -> None:
        upd = ev.get("session")
        if self.beta:
            self.session = merged_session(self.session, beta_to_ga(upd))
            self.temperature = upd.get("temperature", self.temperature)
        else:
            kind = upd.get("type") if isinstance(upd, dict) else "realtime"
            if kind is None:
                raise ClientError("Missing required parameter: 'session.type'.",
                                  "missing_required_parameter", "session.type")
            if kind == "transcription":
                raise ClientError("Passing a transcription session update event to a realtime "
                                  "session is not allowed.", "invalid_value", "session.type")
            if kind != "realtime":
                raise ClientError(f"Invalid value: '{kind}'. Supported values are: 'realtime' and "
                                  "'transcription'.", "invalid_value", "session.type")
            self.session = merged_session(self.session, upd)
        await self.send({"type": "session.updated", "session": self.session_view()})

    async def _on_session_close(self, ev: dict) -> None:
        await self.kill(1000, "session closed")

    # input audio ------------------------------------------------------------------------
    async def _on_input_audio_buffer_append(self, ev: dict) -> None:
        try:
            chunk = base64.b64decode(ev.get("audio") or "", validate=True)
        except (ValueError, TypeError):
            raise ClientError("Invalid 'audio': expected base64-encoded audio.",
                              "invalid_value", "audio")
        fmt = self.session["audio"]["input"]["format"]
        if not self.input_formats or self.input_formats[-1] != fmt:
            self.input_formats.append(dict(fmt))
        self.input_audio += chunk
        self._buffer += chunk
        if self.session["audio"]["input"]["turn_detection"]:
            await self._vad_feed(chunk)

    async def _vad_feed(self, chunk: bytes) -> None:
        td = self.session["audio"]["input"]["turn_detection"]
        fmt = self.session["audio"]["input"]["format"]
        vad, window = self._vad, 20 * bytes_per_ms(fmt)
        self._vad_rest += chunk
        while len(self._vad_rest) >= window:
            frame = bytes(self._vad_rest[:window])
            del self._vad_rest[:window]
            vad["ms"] += 20
            if _rms(decode(fmt, frame)) > td.get("threshold", 0.5) * VAD_FULL_SCALE:
                vad["silence"] = 0
                if not vad["speaking"]:
                    vad.update(speaking=True, item=_id("item"))
                    start = max(0, vad["ms"] - 20 - td.get("prefix_padding_ms", 300))
                    await self.send({"type": "input_audio_buffer.speech_started",
                                     "audio_start_ms": start, "item_id": vad["item"]})
                    if td.get("interrupt_response") and self.active:
                        self.active.cancel("turn_detected")
            elif vad["speaking"]:
                vad["silence"] += 20
                if vad["silence"] >= td.get("silence_duration_ms", 500):
                    vad["speaking"] = False
                    await self.send({"type": "input_audio_buffer.speech_stopped",
                                     "audio_end_ms": vad["ms"], "item_id": vad["item"]})
                    try:
                        await self._commit(vad["item"])
                    except ClientError as e:  # buffer cleared meanwhile
                        await self.error(e.message, e.code)
                        continue
                    if self.active and self.active.cancel_reason:  # let the barge-in finish
                        await asyncio.wait([self.active.task])
                    if td.get("create_response") and not self.active:
                        await self._start_response({})

    async def _on_input_audio_buffer_commit(self, ev: dict) -> None:
        await self._commit(_id("item"))

    async def _on_input_audio_buffer_clear(self, ev: dict) -> None:
        self._buffer.clear()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str) -> None:
        per_ms = bytes_per_ms(self.session["audio"]["input"]["format"])
        if len(self._buffer) < 100 * per_ms:
            raise ClientError("Error committing input audio buffer: buffer too small. Expected at "
                              "least 100ms of audio, but buffer only has "
                              f"{len(self._buffer) / per_ms:.2f}ms of audio.",
                              "input_audio_buffer_commit_empty")
        previous = self.items[-1]["id"] if self.items else None
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": previous,
                         "item_id": item_id})
        item = {"id": item_id, "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        self.item_audio[item_id] = bytearray(self._buffer)
        self.item_format[item_id] = dict(self.session["audio"]["input"]["format"])
        self._buffer.clear()
        await self._add_item(item)
        if self.session["audio"]["input"]["transcription"]:
            await self.send({"type": "conversation.item.input_audio_transcription.completed",
                             "item_id": item_id, "content_index": 0,
                             "transcript": self.standin.input_transcript,
                             "usage": {"type": "tokens", "total_tokens": 24, "input_tokens": 16,
                                       "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
                                       "output_tokens": 8}})

    # conversation -----------------------------------------------------------------------
    async def _add_item(self, item: dict, previous: str | None = None) -> None:
        """Insert after ``previous`` ("root": first; None: last) and announce it."""
        if previous is None:
            at = len(self.items)
        else:
            at = 0 if previous == "root" else self._index(previous, "previous_item_id") + 1
        self.items.insert(at, item)
        prev = self.items[at - 1]["id"] if at else None
        await self.send({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": prev, "item": item})

    def _index(self, item_id: Any, what: str) -> int:
        for i, item in enumerate(self.items):
            if item["id"] == item_id:
                return i
        verb = {"delete": "deleting", "truncate": "truncating", "retrieve": "retrieving"}.get(what)
        if verb is None:
            raise ClientError(f"Invalid '{what}': no item with id '{item_id}'.", "invalid_value", what)
        raise ClientError(f"Error {verb} item: the item with id '{item_id}' does not exist.",
                          f"item_{what}_invalid_item_id", "item_id")

    async def _on_conversation_item_create(self, ev: dict) -> None:
        item = copy.deepcopy(ev.get("item"))
        _check_keys(item, {"id", "type", "object", "status", "role", "content", "call_id", "name",
                           "arguments", "output"}, "item")
        if item.get("type") not in ("message", "function_call", "function_call_output"):
            raise ClientError(f"Invalid value: '{item.get('type')}'. Supported values are: "
                              "'message', 'function_call', and 'function_call_output'.",
                              "invalid_value", "item.type")
        if item["type"] == "message" and item.get("role") not in ("user", "assistant", "system"):
            raise ClientError("Missing or invalid 'item.role'.", "invalid_value", "item.role")
        item.setdefault("id", _id("item"))
        item.pop("object", None)
        item["status"] = "completed"
        await self._add_item(item, ev.get("previous_item_id"))

    async def _on_conversation_item_retrieve(self, ev: dict) -> None:
        item = copy.deepcopy(self.items[self._index(ev.get("item_id"), "retrieve")])
        audio = self.item_audio.get(item["id"])
        if audio is not None and item.get("content"):
            item["content"][0]["audio"] = base64.b64encode(audio).decode()
        await self.send({"type": "conversation.item.retrieved", "item": item})

    async def _on_conversation_item_delete(self, ev: dict) -> None:
        item = self.items.pop(self._index(ev.get("item_id"), "delete"))
        await self.send({"type": "conversation.item.deleted", "item_id": item["id"]})

    async def _on_conversation_item_truncate(self, ev: dict) -> None:
        item = self.items[self._index(ev.get("item_id"), "truncate")]
        content = item.get("content") or [{}]
        if item.get("role") != "assistant" or content[0].get("type") not in ("output_audio", "audio"):
            raise ClientError("Only model output audio messages can be truncated",
                              "unsupported_content_type")
        fmt = self.item_format.get(item["id"], PCM24)
        have = len(self.item_audio.get(item["id"], b"")) // bytes_per_ms(fmt)
        end = ev.get("audio_end_ms", 0)
        if end > have:
            raise ClientError(f"Audio content of {have}ms is already shorter than {end}ms", None)
        content[0]["transcript"] = ""
        await self.send({"type": "conversation.item.truncated", "item_id": item["id"],
                         "content_index": ev.get("content_index", 0), "audio_end_ms": end})

    # responses --------------------------------------------------------------------------
    async def _on_response_create(self, ev: dict) -> None:
        params = ev.get("response") or {}
        _check_keys(params, BETA_RESPONSE_KEYS if self.beta else GA_RESPONSE_KEYS, "response")
        if params.get("conversation", "auto") != "none" and self.active:
            raise ClientError(f"Conversation already has an active response in progress: "
                              f"{self.active.id}. Wait until the response is finished before "
                              "creating a new one.", "conversation_already_has_active_response")
        await self._start_response(params)

    async def _on_response_cancel(self, ev: dict) -> None:
        r, rid = self.active, ev.get("response_id")
        if r is None or r.cancel_reason or (rid and rid != r.id):
            raise ClientError("Cancellation failed: no active response found",
                              "response_cancel_not_active")
        r.cancel("client_cancelled")

    async def _start_response(self, params: dict) -> None:
        s, out = self.session, self.session["audio"]["output"]
        if self.beta:
            mods = params.get("modalities")
            mods = None if mods is None else (["text"] if mods == ["text"] else ["audio"])
            fmt = BETA_FORMATS.get(params.get("output_audio_format"))
            voice = params.get("voice")
        else:
            mods = params.get("output_modalities")
            r_out = (params.get("audio") or {}).get("output") or {}
            fmt = r_out.get("format")
            fmt = fmt and _check_format(fmt, "response.audio.output.format")
            voice = r_out.get("voice")
        mods, fmt, voice = mods or s["output_modalities"], fmt or out["format"], voice or out["voice"]
        in_conv = params.get("conversation", "auto") != "none"
        tools = params.get("tools", s["tools"])
        script = self.standin.scripts.popleft() if self.standin.scripts else self.standin.script
        last = self.items[-1] if self.items else {}
        rid = _id("resp")
        obj: dict[str, Any] = {"object": "realtime.response", "id": rid, "status": "in_progress",
                               "status_details": None, "output": [],
                               "conversation_id": self.conversation_id if in_conv else None}
        if self.beta:
            obj.update(modalities=["text"] if mods == ["text"] else ["audio", "text"], voice=voice,
                       output_audio_format=GA_TO_BETA_FORMAT[fmt["type"]],
                       temperature=params.get("temperature", self.temperature),
                       max_output_tokens=params.get("max_response_output_tokens",
                                                    s["max_output_tokens"]))
        else:
            obj.update(output_modalities=mods,
                       max_output_tokens=params.get("max_output_tokens", s["max_output_tokens"]),
                       audio={"output": {"format": fmt, "voice": voice}})
        obj.update(usage=None, metadata=params.get("metadata"))
        r = _Response(rid, script, obj, in_conv, mods, fmt, wake=asyncio.Event(),
                      function_call=bool(script.function_call and tools
                                         and last.get("type") != "function_call_output"))
        if in_conv:
            self.active = r
        await self.send({"type": "response.created", "response": obj})
        r.task = self._spawn(self._run_response(r))

    async def _emit(self, r: _Response, event: dict, check: bool = False) -> None:
        if r.script.delay:
            try:
                await asyncio.wait_for(r.wake.wait(), r.script.delay)
            except asyncio.TimeoutError:
                pass
        if check and r.cancel_reason:
            raise _Cancelled
        sent = await self.send(event)
        if r.script.close_after and r.script.close_after in (event["type"], sent):
            await self.kill(r.script.close_code, r.script.close_reason)
            raise _Closed

    async def _run_response(self, r: _Response) -> None:
        try:
            try:
                await (self._function_call(r) if r.function_call else self._message(r))
                r.obj.update(status="completed", status_details=None)
            except _Cancelled:
                r.obj.update(status="cancelled",
                             status_details={"type": "cancelled", "reason": r.cancel_reason})
            r.obj["usage"] = r.script.usage or usage()
            if self.active is r:
                self.active = None
            for _ in range(2 if r.script.duplicate_done else 1):
                await self._emit(r, {"type": "response.done", "response": r.obj})
            if r.script.rate_limits:
                await self._emit(r, {"type": "rate_limits.updated", "rate_limits": [
                    {"name": "tokens", "limit": 15000000, "remaining": 14999716,
                     "reset_seconds": 0.001}]})
        except _Closed:
            pass
        finally:
            if self.active is r:
                self.active = None

    async def _open_item(self, r: _Response, item: dict) -> dict:
        index = len(r.obj["output"])
        await self._emit(r, {"type": "response.output_item.added", "response_id": r.id,
                             "output_index": index, "item": item})
        if r.in_conversation:
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            await self._emit(r, {"type": "conversation.item.added", "previous_item_id": previous,
                                 "item": item})
        return {"response_id": r.id, "item_id": item["id"], "output_index": index}

    async def _close_item(self, r: _Response, item: dict, base: dict) -> None:
        if r.in_conversation:
            at = next((i for i, x in enumerate(self.items) if x is item), 0)
            await self._emit(r, {"type": "conversation.item.done",
                                 "previous_item_id": self.items[at - 1]["id"] if at else None,
                                 "item": item})
        await self._emit(r, {"type": "response.output_item.done", "response_id": r.id,
                             "output_index": base["output_index"], "item": item})
        r.obj["output"].append(item)

    async def _message(self, r: _Response) -> None:
        s, audio = r.script, r.modalities == ["audio"]
        ct = (lambda t: t.removeprefix("output_")) if self.beta else (lambda t: t)
        item = {"id": _id("item"), "type": "message", "status": "in_progress", "role": "assistant",
                "content": []}
        base = await self._open_item(r, item)
        base["content_index"] = 0
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        await self._emit(r, {"type": "response.content_part.added", **base, "part": part})
        words = [w + " " for w in s.text.split(" ")]
        words[-1] = words[-1][:-1]
        pcm = self.item_audio.setdefault(item["id"], bytearray())
        self.item_format[item["id"]] = r.fmt
        said: list[str] = []
        kind = "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
        cancelled = False
        try:
            for i in range(max(len(words), s.audio_deltas if audio else 0)):
                if i < len(words) and words[i]:
                    await self._emit(r, {"type": kind, **base, "delta": words[i]}, check=True)
                    said.append(words[i])
                if audio and i < s.audio_deltas:
                    samples = len(pcm) // (2 if r.fmt["type"] == "audio/pcm" else 1)
                    chunk = tone(r.fmt, s.audio_delta_ms, samples)
                    await self._emit(r, {"type": "response.output_audio.delta", **base,
                                         "delta": base64.b64encode(chunk).decode()}, check=True)
                    pcm += chunk
        except _Cancelled:
            cancelled = True
        text = "".join(said)
        if audio:
            await self._emit(r, {"type": "response.output_audio.done", **base})
            await self._emit(r, {"type": "response.output_audio_transcript.done", **base,
                                 "transcript": text})
            part = {"type": "audio", "transcript": text}
            content = {"type": ct("output_audio"), "transcript": text}
        else:
            await self._emit(r, {"type": "response.output_text.done", **base, "text": text})
            part = {"type": "text", "text": text}
            content = {"type": ct("output_text"), "text": text}
        await self._emit(r, {"type": "response.content_part.done", **base, "part": part})
        item.update(status="incomplete" if cancelled else "completed", content=[content])
        await self._close_item(r, item, base)
        if cancelled:
            raise _Cancelled

    async def _function_call(self, r: _Response) -> None:
        name, args = r.script.function_call
        item = {"id": _id("item"), "type": "function_call", "status": "in_progress", "name": name,
                "call_id": _id("call"), "arguments": ""}
        base = await self._open_item(r, item)
        base["call_id"] = item["call_id"]
        step = max(1, -(-len(args) // 3))
        cancelled = False
        try:
            for i in range(0, len(args), step):
                await self._emit(r, {"type": "response.function_call_arguments.delta", **base,
                                     "delta": args[i:i + step]}, check=True)
        except _Cancelled:
            cancelled = True
        else:
            await self._emit(r, {"type": "response.function_call_arguments.done", **base,
                                 "name": name, "arguments": args})
        item.update(status="incomplete" if cancelled else "completed",
                    arguments="" if cancelled else args)
        await self._close_item(r, item, base)
        if cancelled:
            raise _Cancelled


# -- the server ------------------------------------------------------------------------------

class StandIn:
    """The stand-in server.  ``async with StandIn() as up:`` or ``await up.start()`` / ``stop()``.

    * ``keys``: accepted API keys (``None``: any non-empty key); ``models``: accepted models /
      Azure deployments (``None``: any).
    * ``script`` / ``scripts``: how responses go (see :class:`Script`).
    * ``ping_interval``: seconds between server PINGs (0: none).
    * ``handshake_status``: answer the upgrade with this HTTP status instead of 101;
      ``handshake_delay``: seconds to wait before answering.  Both can be changed at any time;
      ``attempts`` counts upgrade requests.
    * ``on_event(session, event)``: called (sync or async) for each parsed client event before
      the default handling; return True to skip it.
    * ``compress``: offer permessage-deflate (like OpenAI).
    """

    def __init__(self, *, keys: set[str] | None = frozenset({"sk-good"}),
                 models: set[str] | None = DEFAULT_MODELS, script: Script | None = None,
                 ping_interval: float = 20.0, handshake_status: int | None = None,
                 handshake_delay: float = 0.0, compress: bool = True,
                 input_transcript: str = "hello there",
                 on_event: Callable[[Session, dict], Any] | None = None) -> None:
        self.keys, self.models = keys, models
        self.script = script or Script()
        self.scripts: deque[Script] = deque()
        self.ping_interval = ping_interval
        self.handshake_status, self.handshake_delay = handshake_status, handshake_delay
        self.compress, self.input_transcript, self.on_event = compress, input_transcript, on_event
        self.sessions: list[Session] = []
        self.attempts = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "StandIn":
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        app.router.add_get("/openai/v1/realtime", self._handle)
        app.router.add_get("/openai/realtime", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (no close frame)."""
        for session in self.sessions:
            if not session.closed.is_set():
                await session.kill()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "StandIn":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def session(self, index: int = -1, timeout: float = 2.0) -> Session:
        """Wait until ``sessions[index]`` exists and has sent its first frame."""
        await until(lambda: len(self.sessions) > (index if index >= 0 else -index - 1)
                    and self.sessions[index].sent, timeout)
        return self.sessions[index]

    def _refusal(self, request: web.Request, beta_dialect: bool) -> tuple[int, str | None, str] | None:
        h, q = request.headers, request.query
        protocols = h.get("Sec-WebSocket-Protocol", "")
        key = None
        auth = h.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        for p in protocols.split(","):
            if p.strip().startswith("openai-insecure-api-key."):
                key = p.strip().removeprefix("openai-insecure-api-key.")
        if request.path.startswith("/openai/"):
            key = h.get("api-key") or q.get("api-key") or key
        if not key:
            return 3000, None, "Missing bearer or basic authentication in header"
        if self.keys is not None and key not in self.keys:
            shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else key
            return 3000, "invalid_api_key", (f"Incorrect API key provided: {shown}. You can find your "
                                             "API key at https://platform.openai.com/account/api-keys.")
        if not beta_dialect and ("realtime=v1" in h.get("OpenAI-Beta", "")
                                 or "openai-beta.realtime-v1" in protocols):
            return 4000, "beta_api_shape_disabled", ("The Realtime Beta API is no longer supported. "
                                                     "Please use /v1/realtime for the GA API.")
        model = q.get("deployment" if beta_dialect else "model")
        if not model:
            return 4000, "missing_model", "Missing required parameter: 'model'."
        if self.models is not None and model not in self.models:
            return 4000, "invalid_model", f"Invalid model: '{model}'."
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.handshake_delay:
            await asyncio.sleep(self.handshake_delay)
        if self.handshake_status is not None:
            return web.json_response({"error": {"message": "stand-in refused the handshake",
                                                "type": "server_error", "code": None}},
                                     status=self.handshake_status)
        beta = request.path == "/openai/realtime"
        ws = web.WebSocketResponse(protocols=("realtime",), autoping=False, max_msg_size=MAX_FRAME,
                                   compress=self.compress, timeout=2.0)
        await ws.prepare(request)
        session = Session(self, request, ws, beta)
        self.sessions.append(session)
        await session.run(self._refusal(request, beta),
                          request.query.get("deployment" if beta else "model", ""))
        return ws


async def until(predicate: Callable[[], Any], timeout: float = 2.0, step: float = 0.005) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(step)
