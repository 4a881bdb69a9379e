"""One response, run as an asyncio task: (wait for STT) → LLM → TTS.

With audio output, LLM tokens go through a clause chunker into a small
queue; a second coroutine synthesizes clause after clause while the LLM
keeps generating (two models, two cores), cuts each clause's audio into
deltas of ``audio_delta_ms`` and hands them to the session with the words
spoken in them.  Cancelling the task stops the LLM within one token and
drops whatever TTS was doing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .backends.base import TTS_RATE, Backends, LlmStream, ToolCall
from .codec import OutputEncoder
from .text import ClauseChunker, align, clean_for_speech

if TYPE_CHECKING:  # pragma: no cover
    from .endpoint import LocalEndpoint
    from .session import Response

log = logging.getLogger("openopen8.engine")


class ResponseRunner:
    def __init__(self, ep: "LocalEndpoint", resp: "Response", backends: Backends,
                 delta_ms: int) -> None:
        self.ep = ep
        self.resp = resp
        self.b = backends
        self.delta_ms = delta_ms
        self._stream: LlmStream | None = None

    async def run(self) -> None:
        ep, s, rid = self.ep, self.ep.session, self.resp.id
        try:
            for item in s.pending_items(self.resp):
                await ep.transcript_ready(item)
            if s.live(rid) is None:
                return
            s.mark(rid, "context_ready")
            req = s.llm_request(self.resp)
            self._stream = self.b.llm.stream(req)
            self.resp.stats = self._stream.stats
            if self.resp.audio_out:
                await self._speak(self._stream)
            else:
                await self._write(self._stream)
            ep.call(s.resp_finish, rid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as a failed response
            log.exception("local engine response %s failed", rid)
            ep.call(s.resp_finish, rid, None, f"{type(exc).__name__}: {exc}")
        finally:
            if self._stream is not None:
                await self._stream.aclose()

    async def _write(self, stream: LlmStream) -> None:
        ep, s, rid = self.ep, self.ep.session, self.resp.id
        async for chunk in stream:
            s.mark(rid, "llm_first")
            if chunk.tool_call is not None:
                self._tool(chunk.tool_call)
            elif chunk.text:
                ep.call(s.resp_text, rid, chunk.text)

    def _tool(self, call: ToolCall) -> None:
        s = self.ep.session
        self.ep.call(s.resp_tool_call, self.resp.id, call.name, call.arguments, call.call_id)

    async def _speak(self, stream: LlmStream) -> None:
        clauses: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)
        calls: list[ToolCall] = []
        s, rid = self.ep.session, self.resp.id

        async def produce() -> None:
            chunker = ClauseChunker()
            async for chunk in stream:
                s.mark(rid, "llm_first")
                if chunk.tool_call is not None:
                    calls.append(chunk.tool_call)
                    continue
                for clause in chunker.push(clean_for_speech(chunk.text)):
                    await clauses.put(clause)
            for clause in chunker.flush():
                await clauses.put(clause)
            await clauses.put(None)

        speaker = asyncio.ensure_future(self._say(clauses))
        producer = asyncio.ensure_future(produce())
        try:
            # whichever fails first ends both (a dead speaker must not leave
            # the producer waiting on a full queue)
            done, _ = await asyncio.wait({producer, speaker},
                                         return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            await producer
            await speaker
        finally:
            for t in (producer, speaker):
                if not t.done():
                    t.cancel()
            await asyncio.gather(producer, speaker, return_exceptions=True)
        for call in calls:
            self._tool(call)

    async def _say(self, clauses: "asyncio.Queue[str | None]") -> None:
        ep, s, rid = self.ep, self.ep.session, self.resp.id
        enc = OutputEncoder(self.resp.params["format"]["type"])
        voice = self.resp.params["voice"]
        step = TTS_RATE * self.delta_ms // 1000
        first = True
        while True:
            clause = await clauses.get()
            if clause is None:
                return
            pcm = await self.b.tts.synthesize(clause, voice if isinstance(voice, str) else None)
            s.mark(rid, "tts_first")
            text = clause if first else " " + clause
            first = False
            if not pcm.size:
                continue
            pieces = align(text, pcm.size, step)
            for i, piece in enumerate(pieces):
                seg = pcm[i * step:(i + 1) * step]
                await ep.audio_room()
                if s.live(rid) is None:
                    return
                ep.call(s.resp_audio, rid, enc.encode(seg), seg.size * 1000.0 / TTS_RATE, piece)
                s.mark(rid, "first_audio")
