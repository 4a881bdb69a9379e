"""A stand-in Realtime upstream for the relay benchmark (picows, one process).

It speaks just enough of the OpenAI Realtime protocol for a relay to treat it
as an upstream, and it is cheap enough never to be the bottleneck:

* on connect it sends ``session.created``;
* it answers every ``input_audio_buffer.append`` with one scripted 20 ms
  ``response.output_audio.delta`` (so deltas stream at 50 Hz while the client
  streams at 50 Hz), whose ``event_id`` carries the append's timestamp;
* it answers ``bench.echo`` with ``bench.echo`` carrying the same timestamp;
* with ``--turn-every N``, after every N deltas of a connection it also sends
  a ``response.done`` with usage (a turn ends: the gateway writes a ledger
  row), so the cost of metering's writes is measured with the relay's;
* everything else is read and ignored.

Timestamps travel in ``event_id`` ("evt_<ns>" up, "event_<ns>" down): a field
every relay forwards untouched, found by a regex whether or not a relay
re-serialised the JSON.

    python bench/standin.py [--port 0]      # prints "READY <port>" when listening
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import re
import struct
import sys

from picows import WSListener, WSMsgType, WSTransport, ws_create_server

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 480                     # 20 ms at 24 kHz
FRAME_BYTES = FRAME_SAMPLES * 2         # PCM16: 960 bytes raw, 1280 base64 chars
MAX_FRAME = 16 * 1024 * 1024

TS_RE = re.compile(rb'"event_id"\s*:\s*"[a-z]+_(\d+)')


def tone_frames(freq: float = 440.0, seconds: float = 1.0) -> list[bytes]:
    """``seconds`` of a sine tone as base64 PCM16 20 ms frames."""
    out = []
    n = int(seconds * 50)
    for i in range(n):
        samples = [int(8000 * math.sin(2 * math.pi * freq * (i * FRAME_SAMPLES + k) / SAMPLE_RATE))
                   for k in range(FRAME_SAMPLES)]
        out.append(base64.b64encode(struct.pack(f"<{FRAME_SAMPLES}h", *samples)))
    return out


SESSION_CREATED = (
    b'{"type":"session.created","event_id":"event_standin0","session":{"type":"realtime",'
    b'"object":"realtime.session","id":"sess_standin","model":"gpt-realtime",'
    b'"output_modalities":["audio"],"audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},'
    b'"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"alloy"}}}}'
)
DELTA_HEAD = b'{"type":"response.output_audio.delta","event_id":"event_'
DELTA_MID = (b'","response_id":"resp_standin","item_id":"item_standin","output_index":0,'
             b'"content_index":0,"delta":"')
ECHO_HEAD = b'{"type":"bench.echo","event_id":"event_'
DONE_HEAD = b'{"type":"response.done","event_id":"event_turn","response":{"object":"realtime.response","id":"resp_'
DONE_TAIL = (b'","status":"completed","output":[],"usage":{"total_tokens":380,"input_tokens":132,'
             b'"output_tokens":248,"input_token_details":{"text_tokens":59,"audio_tokens":73,'
             b'"image_tokens":0,"cached_tokens":64,"cached_tokens_details":{"text_tokens":0,'
             b'"audio_tokens":64,"image_tokens":0}},"output_token_details":{"text_tokens":41,'
             b'"audio_tokens":207}}}}')
_turns = 0


class Upstream(WSListener):
    __slots__ = ("frames", "i", "buf", "turn_every", "n")

    def __init__(self, frames: list[bytes], turn_every: int = 0) -> None:
        self.frames = frames
        self.turn_every = turn_every
        self.n = 0
        self.i = 0
        self.buf: bytearray | None = None    # a fragmented message being assembled

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, SESSION_CREATED)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        mt = frame.msg_type
        if mt == WSMsgType.TEXT or mt == WSMsgType.CONTINUATION:
            if not frame.fin or self.buf is not None:
                if self.buf is None:
                    self.buf = bytearray()
                self.buf += frame.get_payload_as_memoryview()
                if not frame.fin:
                    return
                payload, self.buf = bytes(self.buf), None
            else:
                payload = frame.get_payload_as_bytes()
            head = payload[:48]
            m = TS_RE.search(payload)
            if m is None:
                return
            if b"input_audio_buffer.append" in head:
                i = self.i
                self.i = i + 1 if i + 1 < len(self.frames) else 0
                transport.send(WSMsgType.TEXT, b"".join(
                    (DELTA_HEAD, m.group(1), DELTA_MID, self.frames[i], b'"}')))
                if self.turn_every:
                    self.n += 1
                    if self.n % self.turn_every == 0:
                        global _turns
                        _turns += 1
                        transport.send(WSMsgType.TEXT,
                                       DONE_HEAD + str(_turns).encode() + DONE_TAIL)
            elif b"bench.echo" in head:
                transport.send(WSMsgType.TEXT, ECHO_HEAD + m.group(1) + b'"}')
        elif mt == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code() or 1000)
            transport.disconnect()


async def serve(host: str, port: int, turn_every: int = 0) -> None:
    frames = tone_frames(523.25)
    server = await ws_create_server(lambda request: Upstream(frames, turn_every), host, port,
                                    max_frame_size=MAX_FRAME, websocket_handshake_timeout=10)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--turn-every", type=int, default=0,
                    help="send a response.done with usage after every N deltas of a connection")
    a = ap.parse_args()
    try:
        asyncio.run(serve(a.host, a.port, a.turn_every))
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(0)


if __name__ == "__main__":
    main()
