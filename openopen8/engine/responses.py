"""One response: (wait for STT) → LLM → TTS, as asyncio tasks.

:class:`Pipeline` is the model work: LLM tokens, and with audio output a
clause chunker feeding TTS on its own thread while the LLM keeps generating
(two models, two cores).  It knows nothing of the protocol and writes
``("text", str)``, ``("audio", words, pcm24k)``, ``("tool", ToolCall)`` and
finally ``("end",)`` or ``("error", exc)`` into a small queue.  Because it is
independent of the session, the endpoint can start one *speculatively* when
the user pauses, before the turn is confirmed (see ``endpoint.py``).

:class:`ResponseRunner` reads a pipeline and tells the session: it cuts each
clause's audio into deltas of ``audio_delta_ms``, pairs every delta with the
words spoken in it, encodes it into the response's format and waits for room
in the outbox.  Cancelling the runner cancels the pipeline: the LLM stops
within one token and TTS output is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .backends.base import TTS_RATE, Backends, LlmRequest, ToolCall
from .codec import OutputEncoder
from .text import ClauseChunker, align, clean_for_speech

if TYPE_CHECKING:  # pragma: no cover
    from .endpoint import LocalEndpoint
    from .session import Response

log = logging.getLogger("openopen8.engine")


def same_request(a: LlmRequest, b: LlmRequest) -> bool:
    return (a.messages == b.messages and a.tools == b.tools and a.tool_choice == b.tool_choice
            and a.max_tokens == b.max_tokens and a.temperature == b.temperature)


class Pipeline:
    def __init__(self, backends: Backends, req: LlmRequest, audio: bool,
                 voice: str | None) -> None:
        self.b = backends
        self.req = req
        self.audio = audio
        self.voice = voice
        self.out: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=16)
        #: monotonic times: start, llm_first (first token), tts_first (first clause audio)
        self.times: dict[str, float] = {"pipeline_start": time.monotonic()}
        self.stream = backends.llm.stream(req)
        self.stats = self.stream.stats
        self.task = asyncio.ensure_future(self._run())

    async def cancel(self) -> None:
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            if self.audio:
                await self._speak()
            else:
                async for chunk in self.stream:
                    self.times.setdefault("llm_first", time.monotonic())
                    if chunk.tool_call is not None:
                        await self.out.put(("tool", chunk.tool_call))
                    elif chunk.text:
                        await self.out.put(("text", chunk.text))
            await self.out.put(("end",))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the runner
            await self.out.put(("error", exc))
        finally:
            await self.stream.aclose()

    async def _speak(self) -> None:
        clauses: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)
        calls: list[ToolCall] = []

        async def produce() -> None:
            chunker = ClauseChunker()
            async for chunk in self.stream:
                self.times.setdefault("llm_first", time.monotonic())
                if chunk.tool_call is not None:
                    calls.append(chunk.tool_call)
                    continue
                for clause in chunker.push(clean_for_speech(chunk.text)):
                    await clauses.put(clause)
            for clause in chunker.flush():
                await clauses.put(clause)
            await clauses.put(None)

        async def say() -> None:
            first = True
            while (clause := await clauses.get()) is not None:
                pcm = await self.b.tts.synthesize(clause, self.voice)
                self.times.setdefault("tts_first", time.monotonic())
                await self.out.put(("audio", clause if first else " " + clause, pcm))
                first = False

        producer, speaker = asyncio.ensure_future(produce()), asyncio.ensure_future(say())
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
            await self.out.put(("tool", call))


class ResponseRunner:
    def __init__(self, ep: "LocalEndpoint", resp: "Response", backends: Backends,
                 delta_ms: int) -> None:
        self.ep = ep
        self.resp = resp
        self.b = backends
        self.delta_ms = delta_ms

    async def run(self) -> None:
        ep, s, rid = self.ep, self.ep.session, self.resp.id
        pipe: Pipeline | None = None
        try:
            for item in s.pending_items(self.resp):
                await ep.transcript_ready(item)
            if s.live(rid) is None:
                return
            s.mark(rid, "context_ready")
            req = s.llm_request(self.resp)
            voice = self.resp.params["voice"]
            pipe = ep.adopt_pipeline(req, self.resp.audio_out) or Pipeline(
                self.b, req, self.resp.audio_out, voice if isinstance(voice, str) else None)
            self.resp.stats = pipe.stats
            await self._emit(pipe)
            ep.call(s.resp_finish, rid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as a failed response
            log.exception("local engine response %s failed", rid)
            ep.call(s.resp_finish, rid, None, f"{type(exc).__name__}: {exc}")
        finally:
            if pipe is not None:
                await pipe.cancel()

    async def _emit(self, pipe: Pipeline) -> None:
        ep, s, rid = self.ep, self.ep.session, self.resp.id
        enc = OutputEncoder(self.resp.params["format"]["type"])
        step = TTS_RATE * self.delta_ms // 1000
        while True:
            kind, *rest = await pipe.out.get()
            if kind == "end":
                return
            if kind == "error":
                raise rest[0]
            s.add_timings(rid, pipe.times)
            if kind == "text":
                ep.call(s.resp_text, rid, rest[0])
            elif kind == "tool":
                call: ToolCall = rest[0]
                ep.call(s.resp_tool_call, rid, call.name, call.arguments, call.call_id)
            elif kind == "audio":
                words, pcm = rest
                if not pcm.size:
                    continue
                for i, piece in enumerate(align(words, pcm.size, step)):
                    seg = pcm[i * step:(i + 1) * step]
                    await ep.audio_room()
                    if s.live(rid) is None:
                        return
                    ep.call(s.resp_audio, rid, enc.encode(seg), seg.size * 1000.0 / TTS_RATE,
                            piece)
                    s.mark(rid, "first_audio")
