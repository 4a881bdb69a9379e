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

from .backends.base import NORMAL, PRIORITY, TTS_RATE, URGENT, Backends, LlmRequest, ToolCall
from .codec import OutputEncoder
from .text import (ClauseChunker, SpeechText, align, ends_sentence, last_sentence_end,
                   sentence_ends, sentence_limit)

if TYPE_CHECKING:  # pragma: no cover
    from .endpoint import LocalEndpoint
    from .session import Response

log = logging.getLogger("openopen8.engine")


def same_request(a: LlmRequest, b: LlmRequest) -> bool:
    return (a.messages == b.messages and a.tools == b.tools and a.tool_choice == b.tool_choice
            and a.max_tokens == b.max_tokens and a.temperature == b.temperature)


def _whole_words(text: str) -> str:
    """A reply cut off by the token cap before its first sentence ended: its
    whole words (the last one may be cut), ended as a sentence."""
    text = text.strip()
    if ends_sentence(text):
        return text
    text = text.rsplit(" ", 1)[0] if " " in text else ""
    text = text.rstrip(" ,;:-")
    return text + "." if text else ""


def last_user_text(req: LlmRequest) -> str:
    for m in reversed(req.messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return ""


class Pipeline:
    """The model work of one response.

    Replies end at a sentence: when the LLM stops at its token cap
    (``finish_reason`` "length"), the unfinished sentence after the last
    sentence end is not said (or shown); a spoken reply also stops after
    ``max_sentences`` sentences (see :func:`~.text.sentence_limit`), which
    ends the response normally."""

    def __init__(self, backends: Backends, req: LlmRequest, audio: bool,
                 voice: str | None, max_sentences: int = 0, first_words: int = 0) -> None:
        self.first_words = first_words
        self.b = backends
        self.req = req
        self.audio = audio
        self.voice = voice
        self.max_sentences = sentence_limit(last_user_text(req), max_sentences) if audio else 0
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
                await self._write()
            await self.out.put(("end",))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the runner
            await self.out.put(("error", exc))
        finally:
            await self.stream.aclose()

    async def _write(self) -> None:
        """Text output: streamed as it comes, except the words after the last
        sentence end, held until the next one (so a cut-off drops them)."""
        held, wrote = "", False
        async for chunk in self.stream:
            self.times.setdefault("llm_first", time.monotonic())
            if chunk.tool_call is not None:
                await self.out.put(("tool", chunk.tool_call))
            elif chunk.text:
                held += chunk.text
                cut = last_sentence_end(held)
                if cut:
                    await self.out.put(("text", held[:cut]))
                    held, wrote = held[cut:], True
        if not held:
            return
        if self.stats.finish_reason != "length":
            await self.out.put(("text", held))
        elif not wrote:
            await self.out.put(("text", _whole_words(held)))

    async def _speak(self) -> None:
        clauses: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)
        calls: list[ToolCall] = []

        async def produce() -> None:
            chunker = ClauseChunker(first_max_words=self.first_words)
            speech = SpeechText()
            said = 0                       # clauses sent to TTS
            sentences = 0
            limit = self.max_sentences
            async for chunk in self.stream:
                self.times.setdefault("llm_first", time.monotonic())
                if chunk.tool_call is not None:
                    calls.append(chunk.tool_call)
                    continue
                for clause in chunker.push(speech.push(chunk.text)):
                    ends = sentence_ends(clause)
                    if limit and sentences + len(ends) >= limit:
                        clause = clause[:ends[limit - sentences - 1]]
                    await clauses.put(clause)
                    said += 1
                    sentences += len(ends)
                    if limit and sentences >= limit:
                        # enough for a voice: stop the LLM, and let it finish
                        # (its token count) before the response ends
                        await self.stream.aclose()
                        async for _ in self.stream:
                            pass
                        await clauses.put(None)
                        return
            tail = chunker.push(speech.flush()) + chunker.flush()
            if self.stats.finish_reason == "length" and tail:
                # cut off by the token cap: the unfinished sentence is not said
                keep = max((i + 1 for i, c in enumerate(tail) if ends_sentence(c)), default=0)
                if keep or said:
                    tail = tail[:keep]
                else:            # nothing at all yet: the whole words, as a sentence
                    tail = [t for t in [_whole_words(" ".join(tail))] if t]
            for clause in tail:
                await clauses.put(clause)
            await clauses.put(None)

        async def say() -> None:
            first = True
            while (clause := await clauses.get()) is not None:
                # the first clause is urgent: it goes ahead of other replies' rest
                PRIORITY.set(URGENT if first else NORMAL)
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
                self.b, req, self.resp.audio_out, voice if isinstance(voice, str) else None,
                ep.cfg.max_reply_sentences, ep.cfg.first_clause_words)
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
