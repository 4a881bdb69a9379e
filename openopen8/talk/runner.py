"""The talk driver: connect, set the session up, send the input (file, text
or microphone), answer function calls, decide when the conversation is done,
and report.

Exit codes: 0 done; 1 the server or the conversation failed (refusal, error
event, close, timeout, no speech heard, a call without a result); 2 bad
options; 130 interrupted (Ctrl-C outside ``--mic``, where Ctrl-C is the way
to end and exits 0).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import sys
import time
from typing import Any, Callable

import aiohttp
import orjson
from rich.console import Console
from rich.text import Text

from . import wire
from .audio import AudioError, chunks, load_clip, prepare_samples, silence, speech_ends, write_wav
from .connect import Refused, Unreachable, open_socket
from .conversation import Conversation, ToolCall
from .display import Captions, JsonLines, summary
from .mic import MicIO, MicUnavailable, check_mic, open_mic
from .options import TalkOptions, UsageError, realtime_url
from .stdin import StdinLines
from .wire import Effective, SessionConfig

CHUNK_MS = 20
TRANSCRIPT_GRACE = 3.0  # seconds to wait for a late input transcription at the end
QUIET, QUIET_MAX = 0.25, 1.0  # at the end: read until the server is quiet this long (at most MAX)


class Failure(Exception):
    """Ends the run with exit code 1; the message is shown as is."""


class Interrupted(Exception):
    pass


class ServerError(Exception):
    """An ``error`` event ended the run (already shown as it arrived)."""


def say_error(console: Console, message: str, label: str = "error:", style: str = "red") -> None:
    """``error: message`` in red (or another label and style, e.g. a yellow
    ``hint:``), the message printed literally (no rich markup)."""
    console.print(Text(label, style=style) + Text(" " + message), soft_wrap=True, highlight=False)


def token_hint(token: str | None) -> str:
    """What to do about a 401: talk takes its token from --token or OPENOPEN8_TOKEN."""
    make = "`openopen8 tokens create NAME` on the gateway's machine makes one"
    if not token:
        return f"give talk a gateway token with --token TOKEN or OPENOPEN8_TOKEN=TOKEN ({make})"
    return (f"the gateway does not take the token given (--token or OPENOPEN8_TOKEN): check it; "
            f"{make}")


class Talk:
    def __init__(self, opts: TalkOptions, out: Console, err: Console) -> None:
        self.opts = opts
        self.out, self.err = out, err
        self.view: Captions | JsonLines = JsonLines() if opts.json else Captions(out)
        self.config = SessionConfig(dialect=opts.dialect, fmt=opts.fmt, vad=not opts.manual,
                                    voice=opts.voice, instructions=opts.instructions,
                                    tools=opts.tools, transcribe=opts.transcribe,
                                    text_only=opts.text_only)
        self.conv = Conversation(opts.fmt)
        self.conv.transcribing = bool(opts.transcribe)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed: tuple[int | None, str] | None = None
        self.closing = False
        self.interrupted = False
        self.errors_fatal = True
        self.last_event = time.monotonic()
        self._wake = asyncio.Event()
        self._hooks: list[Callable[[str, dict], None]] = []
        self.mic: MicIO | None = None
        self._stdin: StdinLines | None = None
        self.crashed: BaseException | None = None

    # -- plumbing --------------------------------------------------------------------------
    async def send(self, ev: dict) -> None:
        if self.ws is None or self.ws.closed:
            raise Failure(self._closed_message())
        try:
            await self.ws.send_str(orjson.dumps(ev).decode())
        except (ConnectionError, RuntimeError):
            raise Failure(self._closed_message()) from None

    def _closed_message(self) -> str:
        code, reason = self.closed or (None, "")
        if code is None or code == 1006:
            return "the connection was lost (no close frame)"
        return f"the server closed the connection: code {code}" + (f", {reason}" if reason else "")

    async def _receive(self) -> None:
        assert self.ws is not None
        reason = ""
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        self._on_text(msg.data)
                    except Exception as exc:  # noqa: BLE001 - a bug here must not pass as a close
                        self.crashed = exc
                        break
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self._note_error({"message": "the server sent a binary frame",
                                      "code": "binary_frame"})
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    reason = str(msg.extra or "")
                elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.ERROR):
                    break
        finally:
            self.closed = (self.ws.close_code, reason)
            self._wake.set()

    def _on_text(self, raw: str) -> None:
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._note_error({"message": f"the server sent text that is not JSON: {raw[:80]!r}",
                              "code": "invalid_json"})
            return
        if not isinstance(ev, dict):
            return
        now = time.monotonic()
        self.last_event = now
        etype = wire.canonical(str(ev.get("type") or ""))
        self.view.event(raw, etype, ev)
        self.conv.on_event(etype, ev, now)
        if etype == "error":
            self._show_error(ev.get("error") if isinstance(ev.get("error"), dict) else {})
        for hook in self._hooks:
            hook(etype, ev)
        self._wake.set()

    def _note_error(self, err: dict) -> None:
        self.conv.errors.append(err)
        self._show_error(err)
        self._wake.set()

    def _show_error(self, err: dict) -> None:
        code = err.get("code") or err.get("type") or "error"
        param = f" (param {err['param']})" if err.get("param") else ""
        say_error(self.err, f"{code}: {err.get('message', '')}{param}", "server error")

    def _check(self) -> None:
        if self.interrupted:
            raise Interrupted
        if self.crashed is not None:
            raise Failure(f"talk failed on a server event: {self.crashed!r}")
        if self.errors_fatal and self.conv.errors:
            raise ServerError
        if self.closed is not None and not self.closing:
            raise Failure(self._closed_message())

    async def until(self, pred: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Wait for ``pred``; fail on error/close/interrupt, or when the server
        has said nothing for ``timeout`` seconds (default ``--timeout``)."""
        idle = self.opts.timeout if timeout is None else timeout
        began = time.monotonic()
        while True:
            self._check()
            if pred():
                return
            left = max(self.last_event, began) + idle - time.monotonic()
            if left <= 0:
                raise Failure(f"timed out after {idle:g} s of silence from the server while waiting for {what}")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake early to fail on an error, a close or Ctrl-C."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check()
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        self._check()

    # -- the conversation ------------------------------------------------------------------
    async def setup(self) -> Effective:
        await self.until(lambda: self.conv.session is not None, "session.created")
        await self.send(self.config.session_update())
        await self.until(lambda: self.conv.session_updated, "session.updated")
        eff = wire.effective(self.conv.session or {}, self.opts.dialect, self.config)
        self.conv.out_fmt = eff.out_fmt
        self.conv.transcribing = eff.transcribing  # wait for transcripts only if they will come
        self.conv.text_replies = eff.text_replies
        self.view.note(f"● session ready: {eff.in_fmt.kind} {eff.in_fmt.rate} Hz in, "
                       f"{eff.out_fmt.kind} {eff.out_fmt.rate} Hz out, "
                       + ("server VAD" if eff.vad else "manual turns"))
        return eff

    async def stream(self, data: bytes, eff: Effective, paced: bool,
                     stop: Callable[[], bool] | None = None, ends: frozenset[int] = frozenset(),
                     ) -> None:
        """Append ``data`` in 20 ms chunks, at real-time pace unless ``paced`` is
        false; the moments chunks ``ends`` are sent (where speech ends) are noted."""
        start = time.monotonic()
        for i, chunk in enumerate(chunks(data, eff.in_fmt, CHUNK_MS)):
            self._check()
            if stop is not None and stop():
                return
            await self.send(wire.append(chunk))
            if i in ends:
                self.conv.speech_ended(time.monotonic())
            if paced:
                delay = start + (i + 1) * CHUNK_MS / 1000 - time.monotonic()
                if delay > 0:
                    await self.pause(delay)
            elif i % 50 == 49:
                await asyncio.sleep(0)

    async def send_file(self, eff: Effective, clip: Any) -> None:
        samples = prepare_samples(clip, eff.in_fmt)
        data = eff.in_fmt.encode(samples)
        self.view.note(f"▸ sending {clip.seconds:.2f} s of audio ({clip.rate} Hz, "
                       f"{clip.channels} ch → {eff.in_fmt.kind} {eff.in_fmt.rate} Hz mono"
                       + (", fast" if self.opts.fast else ", real time") + ")")
        paced = not self.opts.fast
        if not eff.vad:
            short = eff.in_fmt.bytes_for_ms(100) - len(data)
            if short > 0:  # a commit needs 100 ms
                data += silence(eff.in_fmt, eff.in_fmt.ms_of(short) + 1)
            await self.stream(data, eff, paced)
            await self.end_turn("commit")
            return
        # where the speech in the file ends: at real-time pace, the moment its
        # last frame is sent is when a speaker would have stopped, and latency
        # is measured from there too (sent --fast, that moment says nothing)
        ends = speech_ends(samples, eff.in_fmt.rate, CHUNK_MS, eff.silence_ms or 500) \
            if paced else []
        await self.stream(data, eff, paced, ends=frozenset(ends))
        # trailing silence, so that server VAD can hear the speech end
        # at least the VAD's silence duration (and a margin) even if the end seems heard
        # already: the server may not have processed the last chunks yet
        hang = (eff.silence_ms or 500) + 300
        heard_end = lambda: self.conv.speech_seen and not self.conv.speaking  # noqa: E731
        await self.stream(silence(eff.in_fmt, hang), eff, paced)
        if paced:  # more, as a microphone would, until the VAD hears the end
            await self.stream(silence(eff.in_fmt, 3000), eff, True, stop=heard_end)
        try:
            await self.until(heard_end, "the end of speech (server VAD)",
                             timeout=min(self.opts.timeout, 10.0))
        except Failure:
            if self.conv.errors or self.closed:
                raise
            if not self.conv.speech_seen:
                raise Failure("server VAD heard no speech in the file (is it silent or too quiet? "
                              "--manual commits without VAD)") from None
            raise Failure("server VAD did not hear the speech end after the file and "
                          "trailing silence (--manual commits without VAD)") from None

    async def end_turn(self, trigger: str) -> None:
        """Manual turn end: commit the audio buffer and ask for a response."""
        if trigger == "commit":
            await self.send(wire.commit())
        self.conv.mark(trigger, time.monotonic())
        self.conv.expect_response()
        await self.send(wire.response_create())

    async def send_text(self, text: str) -> None:
        self.view.user_text(text)
        await self.send(wire.user_text(text))
        await self.end_turn("text")

    async def answer(self, calls: list[ToolCall]) -> None:
        for call in calls:
            result = self.opts.tool_results.get(call.name)
            if result is None:
                result = await self.ask(call)
            await self.send(wire.tool_output(call.call_id, result))
            call.answered = True
            self.view.tool_result(call.name, result)
        await self.end_turn("tool output")

    async def ask(self, call: ToolCall) -> str:
        if not sys.stdin.isatty():
            raise Failure(f"the model called {call.name}({call.arguments}) but no "
                          f"--tool-result {call.name}=JSON was given, and there is no terminal to ask")
        self.view.close()
        while True:
            self.err.print(f"result of {call.name}({call.arguments}) as JSON: ", end="",
                           highlight=False, markup=False)
            line = await self.stdin().line()
            if line is None:
                raise Failure(f"no result for {call.name}: standard input ended")
            try:
                return json.dumps(json.loads(line or "null"), ensure_ascii=False)
            except json.JSONDecodeError:
                self.err.print("not JSON; try again (a string needs quotes)")

    def stdin(self) -> StdinLines:
        if self._stdin is None:
            self._stdin = StdinLines()
        return self._stdin

    async def finish(self) -> None:
        """Answer function calls until every input has had its reply."""
        while True:
            calls = self.conv.calls_to_answer()
            if calls:
                await self.answer(calls)
                continue
            if self.conv.settled():
                break
            await self.until(lambda: self.conv.settled() or bool(self.conv.calls_to_answer()),
                             "the reply")
        if self.conv.awaiting_transcript:
            with contextlib.suppress(Failure):
                await self.until(lambda: not self.conv.awaiting_transcript, "transcripts",
                                 timeout=TRANSCRIPT_GRACE)
        # events that trail a reply (rate_limits.updated comes ~40 ms after
        # response.done): take them in before closing, so --json shows them all
        end = time.monotonic() + QUIET_MAX
        while time.monotonic() < end and time.monotonic() - self.last_event < QUIET:
            await self.pause(min(QUIET - (time.monotonic() - self.last_event), end - time.monotonic()))

    async def converse_mic(self, eff: Effective) -> None:
        """Capture until Ctrl-C; play replies; stop playback when the user
        speaks over one and tell the server how much was heard."""
        self.errors_fatal = False
        mic = self.mic = open_mic(eff.in_fmt, eff.out_fmt)
        loop = asyncio.get_running_loop()
        truncations: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

        def on_event(etype: str, ev: dict) -> None:
            if etype == "response.output_audio.delta":
                with contextlib.suppress(ValueError, TypeError):
                    mic.play(str(ev.get("item_id") or ""), base64.b64decode(ev.get("delta") or ""))
            elif etype == "input_audio_buffer.speech_started":
                cut = mic.barge_in()
                if cut is not None and cut[0]:
                    truncations.put_nowait((cut[0], cut[1]))

        self._hooks.append(on_event)
        mic.start(loop)
        self.view.note(f"● listening on {mic.description}: speak"
                       + (", press Enter to end your turn" if not eff.vad else "")
                       + "; Ctrl-C ends (headphones keep the reply from interrupting itself)")

        async def pump() -> None:
            while True:
                await self.send(wire.append(await mic.chunks.get()))

        async def turns() -> None:
            while await self.stdin().line() is not None:
                await self.end_turn("commit")

        async def truncate() -> None:
            while True:
                item, ms = await truncations.get()
                await self.send(wire.truncate(item, ms))

        tasks = [asyncio.ensure_future(c) for c in
                 (pump(), truncate(), *(() if eff.vad else (turns(),)))]
        try:
            while True:
                calls = self.conv.calls_to_answer()
                if calls:
                    await self.answer(calls)
                self._wake.clear()
                self._check()
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                await self._wake.wait()
        finally:
            for t in tasks:
                t.cancel()
            mic.stop()

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> int:
        opts = self.opts
        url = realtime_url(opts.url, opts.model)
        clip = None
        try:
            if opts.file is not None:
                clip = load_clip(opts.file, opts.rate, opts.channels)
                if clip.samples.shape[0] == 0:
                    raise UsageError(f"{opts.file} holds no audio")
            if opts.mic:
                check_mic()
        except AudioError as exc:
            raise UsageError(str(exc)) from None
        except MicUnavailable as exc:
            say_error(self.err, str(exc))
            return 1
        try:
            http, self.ws = await open_socket(url, opts.token, opts.dialect == "beta")
        except Refused as exc:
            code = f" ({exc.code})" if exc.code else ""
            say_error(self.err, f"the gateway refused the connection: HTTP {exc.status}{code}: "
                                f"{exc.message}")
            if exc.status == 401:
                say_error(self.err, token_hint(opts.token), "hint:", "yellow")
            return 1
        except Unreachable as exc:
            say_error(self.err, str(exc))
            return 1
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        receiver = asyncio.ensure_future(self._receive())
        code = 0
        try:
            eff = await self.setup()
            if opts.mic:
                await self.converse_mic(eff)
            else:
                if clip is not None:
                    await self.send_file(eff, clip)
                else:
                    await self.send_text(opts.text or "")
                await self.finish()
        except Failure as exc:
            self.view.close()
            say_error(self.err, str(exc))
            code = 1
        except ServerError:
            self.view.close()
            # a fatal error comes with a close right behind it: say which
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(receiver), 0.5)
            then = f", then {self._closed_message()}" if self.closed else ""
            say_error(self.err, f"stopped after the server's error{then}")
            code = 1
        except MicUnavailable as exc:
            self.view.close()
            say_error(self.err, str(exc))
            code = 1
        except Interrupted:
            self.view.close()
            code = 0 if opts.mic else 130
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            self.closing = True
            if self.ws is not None and not self.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(code=1000), 3)
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
            await http.close()
        if code == 0 and self.conv.errors:
            code = 1  # --mic goes on after an error, but the run did not go cleanly
        self.report(code)
        return code

    def _interrupt(self) -> None:
        if self.interrupted:  # a second Ctrl-C: stop waiting for anything
            raise KeyboardInterrupt
        self.interrupted = True
        self._wake.set()

    def report(self, code: int) -> None:
        self.view.close()
        if self.opts.out is not None:
            fmt = self.conv.out_fmt
            samples = fmt.decode(bytes(self.conv.reply_audio))
            try:
                write_wav(self.opts.out, samples, fmt.rate)
            except OSError as exc:
                say_error(self.err, f"cannot write {self.opts.out}: {exc}")
            else:
                self.view.note(f"● reply audio: {self.opts.out} ({len(samples) / fmt.rate:.2f} s, "
                               f"{fmt.rate} Hz mono)")
        if self.conv.responses or code == 0:
            summary(self.conv, self.err if self.opts.json else self.out)


def talk(opts: TalkOptions, out: Console | None = None, err: Console | None = None) -> int:
    """Run one conversation; return the exit code."""
    out = out or Console(soft_wrap=True, highlight=False)
    err = err or Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        return asyncio.run(Talk(opts, out, err).run())
    except UsageError as exc:
        say_error(err, str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
