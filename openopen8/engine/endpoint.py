"""The engine as an in-process :class:`~openopen8.relay.endpoint.Endpoint`.

The relay ``send``s client events here and ``recv``s server events, exactly
as with an OpenAI WebSocket.  One worker task feeds client events to the
state machine in order (awaiting the VAD for appends, so turn events keep
their place); STT jobs and responses run as their own tasks; every call into
the state machine is followed by :meth:`_pump`, which moves its events into
the outbox and carries out its effects.

Bounded everywhere: the inbox holds 256 client events (a fast client waits),
and a response pauses once ``max_queued_audio_ms`` of audio waits in the
outbox for the client.  A barge-in or cancel drops that response's queued
deltas at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Callable

from ..events import Event
from .backends.base import PRIORITY, URGENT, Backends, VadStream
from .config import EngineConfig
from .conversation import Item
from .responses import Pipeline, ResponseRunner, same_request
from .session import (CancelResponse, DetectSpeech, EngineSession, Out, ResetVad,
                      Speculate, StartResponse, Transcribe)

log = logging.getLogger("openopen8.engine")

INBOX_SIZE = 256


def _consume(task: "asyncio.Task[Any]") -> None:
    """Retrieve a dropped speculative task's exception (no warning)."""
    if not task.cancelled():
        task.exception()


class LocalEndpoint:
    def __init__(self, backends: Backends, cfg: EngineConfig, session_id: str,
                 model: str) -> None:
        self.close_code: int | None = None
        self.close_reason = ""
        self.b = backends
        self.cfg = cfg
        self.session = EngineSession(cfg, session_id, model, backends.llm.count_tokens)
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._out: collections.deque[Out] = collections.deque()
        self._out_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._queued_audio_ms = 0.0
        self._vad: VadStream | None = None
        self._vad_todo: list[Any] = []
        self._stt: dict[str, asyncio.Future[None]] = {}
        #: transcription started at a pause, before the turn was confirmed
        self._spec: dict[str, asyncio.Task[Any]] = {}
        #: a response pipeline started at that pause, adopted if the turn ends
        self._pre: Pipeline | None = None
        self.stats = {"speculations": 0, "pipelines_started_early": 0, "adopted": 0}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._pump()
        self._worker = asyncio.ensure_future(self._work())

    # ------------------------------------------------------------ Endpoint

    async def send(self, ev: Event) -> None:
        if self._closed:
            raise ConnectionError("local engine session is closed")
        await self._inbox.put(ev)

    async def recv(self) -> Event | None:
        while True:
            if self._out:
                o = self._out.popleft()
                if o.audio_ms:
                    self._queued_audio_ms -= o.audio_ms
                    if self._queued_audio_ms <= self.cfg.max_queued_audio_ms:
                        self._room.set()
                    if o.resp_id:
                        self.session.audio_delivered(o.resp_id, o.audio_ms)
                return Event.from_data(o.event)
            if self._closed:
                return None
            self._out_ready.clear()
            await self._out_ready.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.session.close()
        self._drop_pre()
        tasks = [self._worker, *self._runners.values(), *self._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runners.clear()
        self._out_ready.set()
        self._room.set()

    # --------------------------------------------------- state machine glue

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call into the state machine, then deliver what it produced."""
        result = fn(*args)
        self._pump()
        return result

    def _pump(self) -> None:
        s = self.session
        if s.out:
            out, s.out = s.out, []
            for o in out:
                self._out.append(o)
                if o.audio_ms:
                    self._queued_audio_ms += o.audio_ms
            if self._queued_audio_ms > self.cfg.max_queued_audio_ms:
                self._room.clear()
            self._out_ready.set()
        while s.effects:
            effects, s.effects = s.effects, []
            for e in effects:
                self._effect(e)
            if s.out:
                self._pump()

    def _effect(self, e: Any) -> None:
        if isinstance(e, DetectSpeech):
            self._vad_todo.append(e)
        elif isinstance(e, Transcribe):
            self._start_stt(e.item)
        elif isinstance(e, StartResponse):
            runner = ResponseRunner(self, e.resp, self.b, self.cfg.audio_delta_ms)
            task = asyncio.ensure_future(runner.run())
            self._runners[e.resp.id] = task
            task.add_done_callback(lambda _t, rid=e.resp.id: self._runners.pop(rid, None))
        elif isinstance(e, CancelResponse):
            task = self._runners.pop(e.resp_id, None)
            if task is not None:
                task.cancel()
            self._purge(e.resp_id)
        elif isinstance(e, Speculate):
            for task in self._spec.values():
                task.cancel()          # only the latest guess can still be right
            self._spec.clear()
            self._drop_pre()
            if e.pcm16k is not None and e.pcm16k.size >= 1600:
                task = asyncio.ensure_future(self._speculate(e))
                self.stats["speculations"] += 1
                task.add_done_callback(_consume)
                self._spec[e.item_id] = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(e, ResetVad):
            self._vad = self.b.vad.stream()
            self._vad_todo.clear()
            self.session.vad_reset_position()

    async def _speculate(self, e: Speculate) -> Any:
        """Transcribe the paused turn, then start its response's model work,
        unseen until the turn ends (and dropped if it does not).  For
        semantic_vad, first judge whether the words are a complete turn (on
        the LLM's worker, before the reply: its tokens are the reply prompt's
        prefix) and tell the session, which may end the turn now."""
        PRIORITY.set(URGENT)            # this task only: a turn's decisive work
        tr = await self.b.stt.transcribe(e.pcm16k)
        p_end = None
        if e.judge and tr.text.strip():
            p_end = await self._end_of_turn(tr.text)
        preview = self.session.preview_request(tr.text)
        if preview is not None and not self._closed:
            req, audio, voice = preview
            self._drop_pre()
            self._pre = Pipeline(self.b, req, audio, voice if isinstance(voice, str) else None,
                                 self.cfg.max_reply_sentences, self.cfg.first_clause_words)
            self.stats["pipelines_started_early"] += 1
        if p_end is not None and not self._closed:
            self.call(self.session.turn_hint, e.item_id, e.at_ms, p_end, tr.text)
        return tr

    async def _end_of_turn(self, text: str) -> float:
        """P(the user's turn is complete) by the LLM when it can tell (llama.cpp),
        else 1 for a question mark and 0 otherwise (the session then goes by
        the punctuation)."""
        judge = getattr(self.b.llm, "end_of_turn", None)
        if judge is not None:
            try:
                return float(await judge(self.session.turn_messages(text)))
            except Exception:  # noqa: BLE001 - judged by punctuation instead
                log.exception("local engine end-of-turn scoring failed")
        return 1.0 if text.strip().endswith("?") else 0.0

    def _drop_pre(self) -> None:
        pre, self._pre = self._pre, None
        if pre is not None and not pre.task.done():
            pre.task.cancel()               # its finally stops the LLM thread
            self._tasks.add(pre.task)
            pre.task.add_done_callback(self._tasks.discard)

    def adopt_pipeline(self, req: Any, audio: bool) -> Pipeline | None:
        """The speculative pipeline, if it computed exactly this request."""
        pre, self._pre = self._pre, None
        if pre is None:
            return None
        if pre.audio == audio and same_request(pre.req, req) and not pre.task.cancelled():
            self.stats["adopted"] += 1
            return pre
        self._pre = pre
        self._drop_pre()
        return None

    def _purge(self, resp_id: str) -> None:
        """Barge-in: output audio still queued for the client is dropped."""
        if not any(o.droppable and o.resp_id == resp_id for o in self._out):
            return
        kept: collections.deque[Out] = collections.deque()
        for o in self._out:
            if o.droppable and o.resp_id == resp_id:
                self._queued_audio_ms -= o.audio_ms
            else:
                kept.append(o)
        self._out = kept
        if self._queued_audio_ms <= self.cfg.max_queued_audio_ms:
            self._room.set()

    async def audio_room(self) -> None:
        while self._queued_audio_ms > self.cfg.max_queued_audio_ms and not self._closed:
            self._room.clear()
            await self._room.wait()

    # ---------------------------------------------------------------- STT

    def _start_stt(self, item: Item) -> None:
        if item.id in self._stt or item.pcm16k is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stt[item.id] = fut
        spec = self._spec.pop(item.id, None)
        task = asyncio.ensure_future(self._transcribe(item, fut, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(self, item: Item, fut: asyncio.Future[None],
                          spec: "asyncio.Task[Any] | None" = None) -> None:
        PRIORITY.set(URGENT)            # a turn waits on it
        try:
            pcm = item.pcm16k
            tr = None
            if spec is not None:
                # the turn ended without new speech since the pause: the
                # speculative transcript covers the same words
                try:
                    tr = await spec
                    tr.seconds = item.audio_ms / 1000.0
                except asyncio.CancelledError:
                    if not spec.cancelled():
                        raise
                except Exception:  # noqa: BLE001 - fall back to a fresh run
                    tr = None
            if tr is None:
                tr = await self.b.stt.transcribe(pcm)  # type: ignore[arg-type]
            self.call(self.session.transcribed, item, tr.text, tr.seconds, self.b.stt.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as transcription.failed
            log.exception("local engine transcription failed")
            self.call(self.session.transcription_failed, item, f"{type(exc).__name__}: {exc}")
        finally:
            if not fut.done():
                fut.set_result(None)
            self._stt.pop(item.id, None)

    async def transcript_ready(self, item: Item) -> None:
        fut = self._stt.get(item.id)
        if fut is not None:
            await asyncio.shield(fut)

    # ------------------------------------------------------------- worker

    async def _work(self) -> None:
        s = self.session
        while True:
            ev = await self._inbox.get()
            try:
                data = self._parse(ev)
                if data is not None:
                    s.client_event(data)
                self._pump()
                while self._vad_todo:
                    todo = self._vad_todo.pop(0)
                    vad = self._vad
                    if vad is None:
                        break
                    probs = await vad.probabilities(todo.pcm16k)
                    if probs:
                        self.call(s.speech_probabilities, probs, vad.frame_ms)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug must not kill the session
                log.exception("local engine failed on a %s event", ev.type)
                s.error("engine_error", "The local engine failed to process this event.",
                        type="server_error")
                self._pump()

    def _parse(self, ev: Event) -> dict[str, Any] | None:
        s = self.session
        if ev.invalid == "binary":
            s.error("invalid_event", "Expected a text WebSocket message, got binary.")
            return None
        if ev.invalid == "invalid_json":
            s.error("invalid_json", "The event is not valid JSON.")
            return None
        try:
            data = ev.data
        except ValueError:
            s.error("invalid_json", "The event is not valid JSON.")
            return None
        if not isinstance(data, dict):
            s.error("invalid_event", "The event must be a JSON object.")
            return None
        if not isinstance(data.get("type"), str):
            s.error("invalid_event", "The 'type' field is missing.",
                    event_id=data.get("event_id"))
            return None
        return data
