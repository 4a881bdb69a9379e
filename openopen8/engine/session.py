"""The engine's protocol state machine: GA client events in, server events out.

No sockets, no threads, no models.  A driver (``endpoint.py``) feeds it:

* ``client_event(dict)`` for every client event;
* ``speech_probabilities(probs, frame_ms)`` with VAD output for the audio an
  append produced (requested through a :class:`DetectSpeech` effect);
* ``transcribed`` / ``transcription_failed`` when STT of a user item ends;
* ``resp_*`` calls from a running response (text, audio, tool calls, end);
* ``audio_delivered`` when an audio delta has reached the client.

It answers through two lists the driver drains after every call:
``out`` (server events, in order, tagged with their response and whether a
barge-in may drop them) and ``effects`` (work for the driver: transcribe,
start or cancel a response, run the VAD, reset it).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from ..events import new_event_id
from .backends.base import LlmRequest, LlmStats
from .codec import (AudioDecodeError, InputDecoder, b64decode, b64encode, bytes_per_ms,
                    format_rate, resample, wire_to_pcm)
from .config import EngineConfig, voice_examples
from .conversation import Conversation, History, Item, build_history, item_from_client, new_id
from .sessionconfig import ProtocolError, apply_session_update, default_session, response_params
from .turns import TurnDetector, TurnEvent
from .usage import usage

#: accepted client event types (the list OpenAI's ``invalid_value`` names)
CLIENT_EVENTS = (
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear", "conversation.item.create", "conversation.item.truncate",
    "conversation.item.delete", "conversation.item.retrieve", "response.create",
    "response.cancel",
)
MIN_COMMIT_MS = 100.0
#: manual-turn buffer cap (oldest audio dropped beyond it)
MAX_BUFFER_MS = 10 * 60 * 1000.0
#: with server VAD and no speech, keep only this much before the padding
IDLE_KEEP_MS = 1000.0


# ------------------------------------------------------------------ effects

@dataclass
class DetectSpeech:
    pcm16k: np.ndarray


@dataclass
class ResetVad:
    pass


@dataclass
class Transcribe:
    item: Item


@dataclass
class Speculate:
    """Transcribe the turn so far (speech paused); ``pcm16k`` None drops it.
    With ``judge`` (semantic_vad), also judge whether the words are a complete
    turn and answer with :meth:`EngineSession.turn_hint` (pause at ``at_ms``)."""
    item_id: str
    pcm16k: np.ndarray | None
    at_ms: int = 0
    judge: bool = False


#: semantic_vad by eagerness: (end-of-turn probability that counts as
#: complete, then the silence in ms that ends the turn when the words are
#: complete / end like a sentence / are unfinished).  OpenAI documents waits
#: of up to 8 s (low) / 4 s / 2 s (high); a voice assistant on a small model
#: would feel slow with those, so the longest waits here are shorter.
SEMANTIC = {
    "high": (0.01, 100, 500, 800),
    "auto": (0.02, 150, 900, 1200),
    "medium": (0.02, 150, 900, 1200),
    "low": (0.05, 300, 1500, 2000),
}
#: words a finished sentence rarely ends on
_OPEN_WORDS = frozenset(
    "a an the of to and or but in on at for with from by about as my your his her their "
    "our its which if than because very some any um uh".split())


#: words people open a turn with and then go on after a comma's pause ("Hi,
#: I am Maria.", "Wait, stop please."): alone, they wait like a sentence
#: that may go on -- SmolLM2 judged them complete and split 7 of 15 such
#: utterances in the voice benchmark's voices
_OPENERS = frozenset(
    "hi hello hey wait so well okay ok oh now listen look also actually and but".split())


def opens_turn(text: str) -> bool:
    """The transcript is a lone opening word ("Hi", "Wait.", "Hello?")."""
    words = text.strip().split()
    return len(words) == 1 and words[0].lower().strip(".,!?;:\"'") in _OPENERS


def ends_open(text: str) -> bool:
    """The transcript's last word is one a sentence rarely ends on."""
    words = text.strip().rstrip(".!?,;:").split()
    return not words or words[-1].lower().strip(",;:\"'") in _OPEN_WORDS


def sounds_final(text: str) -> bool:
    """The transcript ends like a sentence: final punctuation after a word
    that can end one (Whisper punctuates a cut-off phrase too, but rarely
    after "the" or "of")."""
    t = text.strip()
    if not t or t[-1] not in ".!?" or t.endswith("..."):
        return False
    words = t.rstrip(".!?").split()
    return bool(words) and words[-1].lower().strip(",;:\"'") not in _OPEN_WORDS


@dataclass
class StartResponse:
    resp: "Response"


@dataclass
class CancelResponse:
    resp_id: str


class Out(NamedTuple):
    event: dict[str, Any]
    resp_id: str | None = None
    audio_ms: float = 0.0
    droppable: bool = False      # a barge-in may drop it if still queued


@dataclass
class Response:
    id: str
    params: dict[str, Any]
    in_conversation: bool
    context: list[Item]
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[Item] = field(default_factory=list)
    msg: Item | None = None
    msg_index: int = 0
    text: str = ""
    audio_ms: float = 0.0
    delivered_ms: float = 0.0
    first_delivery: float | None = None
    history: History | None = None
    stats: LlmStats = field(default_factory=LlmStats)
    usage: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def audio_out(self) -> bool:
        return "audio" in self.params["output_modalities"]


class EngineSession:
    def __init__(self, cfg: EngineConfig, session_id: str, model: str,
                 count_tokens: Callable[[str], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.count_tokens = count_tokens
        self.clock = clock
        self.session = default_session(cfg, session_id, model)
        self.conversation_id = new_id("conv")
        self.conv = Conversation(cfg.max_items)
        self.out: list[Out] = []
        self.effects: list[Any] = []
        self.responses: dict[str, Response] = {}
        self.active: Response | None = None
        self.finished: list[Response] = []          # for metrics; bounded
        td = self._td()
        self.turns = TurnDetector(td["threshold"], td["prefix_padding_ms"],
                                  td["silence_duration_ms"],
                                  pause_ms=cfg.speculative_stt_ms or None)
        #: semantic_vad decisions, for benchmarks: (probability, wait_ms, transcript)
        self.turn_hints: list[tuple[float, int, str]] = []
        self._decoder = InputDecoder(self._in_fmt())
        self._raw = bytearray()          # the input buffer, as wire bytes
        self._buf_start_ms = 0.0
        self._timeline_ms = 0.0
        self._pending_user_id: str | None = None
        self._speech_start_ms = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }
        self._emit({"type": "session.created", "session": copy.deepcopy(self.session)})
        self.effects.append(ResetVad())

    # ------------------------------------------------------------- plumbing

    def _emit(self, ev: dict[str, Any], resp_id: str | None = None, audio_ms: float = 0.0,
              droppable: bool = False) -> None:
        ev["event_id"] = new_event_id()
        self.out.append(Out(ev, resp_id, audio_ms, droppable))

    def error(self, code: str | None, message: str, param: str | None = None,
              event_id: str | None = None, type: str = "invalid_request_error") -> None:
        self._emit({"type": "error", "error": {"type": type, "code": code, "message": message,
                                               "param": param, "event_id": event_id}})

    def _td(self) -> dict[str, Any] | None:
        return self.session["audio"]["input"]["turn_detection"]

    def _in_fmt(self) -> str:
        return self.session["audio"]["input"]["format"]["type"]

    def _transcription_on(self) -> bool:
        return self.session["audio"]["input"]["transcription"] is not None

    def client_event(self, data: dict[str, Any]) -> None:
        t = data.get("type")
        handler = self._handlers.get(t)  # type: ignore[arg-type]
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        if handler is None:
            self.error("invalid_value",
                       f"Invalid value: '{t}'. Supported values are: "
                       + ", ".join(f"'{x}'" for x in CLIENT_EVENTS) + ".", "type", event_id)
            return
        try:
            handler(data)
        except ProtocolError as exc:
            self.error(exc.code, exc.message, exc.param, event_id, exc.type)

    # -------------------------------------------------------------- session

    def _session_update(self, d: dict[str, Any]) -> None:
        old = self.session
        new = apply_session_update(old, d.get("session"), self.cfg)
        self.session = new
        if new["audio"]["input"]["format"] != old["audio"]["input"]["format"]:
            self._decoder = InputDecoder(self._in_fmt())
            self._drop_buffer()
        td_old, td = old["audio"]["input"]["turn_detection"], self._td()
        if td != td_old:
            self.turns.reset()
            self._pending_user_id = None
            if td is not None and td["type"] == "server_vad":
                self.turns.configure(td["threshold"], td["prefix_padding_ms"],
                                     td["silence_duration_ms"])
                self.turns.pause_ms = self.cfg.speculative_stt_ms or None
            elif td is not None:
                # semantic_vad: the longest wait, until the words are judged
                self.turns.configure(self.cfg.vad_threshold, self.cfg.prefix_padding_ms,
                                     SEMANTIC[td["eagerness"]][3])
                self.turns.pause_ms = self.cfg.semantic_pause_ms
            if td is not None and td_old is None:
                self.effects.append(ResetVad())
        self._emit({"type": "session.updated", "session": copy.deepcopy(new)})

    # -------------------------------------------------------- input buffer

    def _append(self, d: dict[str, Any]) -> None:
        audio = d.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("missing_required_parameter",
                                "Missing required parameter: 'audio'.", "audio")
        try:
            raw = b64decode(audio)
        except AudioDecodeError as exc:
            raise ProtocolError("invalid_value", str(exc), "audio") from None
        if not raw:
            return
        pcm = self._decoder.decode(raw)        # streaming, for the VAD only
        self._raw += raw
        ms = len(raw) / bytes_per_ms(self._in_fmt())
        self._timeline_ms += ms
        if self._td() is not None:
            if pcm.size:
                self.effects.append(DetectSpeech(pcm))
            if not self.turns.in_speech:
                keep = self.turns.prefix_padding_ms + IDLE_KEEP_MS
                if self._timeline_ms - self._buf_start_ms > keep + IDLE_KEEP_MS:
                    self._drop_before(self._timeline_ms - keep)
        elif self._timeline_ms - self._buf_start_ms > MAX_BUFFER_MS:
            self._drop_before(self._timeline_ms - MAX_BUFFER_MS)

    def vad_reset_position(self) -> None:
        """A fresh VAD stream starts at the current end of the audio."""
        self.turns.reset()
        self.turns.pos_ms = self._timeline_ms

    def _drop_before(self, ms: float) -> None:
        """Forget buffered audio before timeline ``ms``."""
        drop_ms = ms - self._buf_start_ms
        if drop_ms <= 0:
            return
        bpm = bytes_per_ms(self._in_fmt())
        nbytes = int(drop_ms * bpm)
        nbytes -= nbytes % 2 if self._in_fmt() == "audio/pcm" else 0
        del self._raw[:nbytes]
        self._buf_start_ms += nbytes / bpm

    def _take(self, start_ms: float, end_ms: float) -> tuple[np.ndarray, bytes, float]:
        """Audio in [start_ms, end_ms) of the timeline; the buffer keeps what follows."""
        start_ms = max(start_ms, self._buf_start_ms)
        end_ms = max(start_ms, min(end_ms, self._timeline_ms))
        self._drop_before(start_ms)
        bpm = bytes_per_ms(self._in_fmt())
        span = end_ms - self._buf_start_ms
        nbytes = int(span * bpm)
        nbytes -= nbytes % 2 if self._in_fmt() == "audio/pcm" else 0
        raw = bytes(self._raw[:nbytes])
        del self._raw[:nbytes]
        self._buf_start_ms += nbytes / bpm
        fmt = self._in_fmt()
        pcm = resample(wire_to_pcm(fmt, raw), format_rate(fmt), 16000)
        return pcm, raw, nbytes / bpm

    def _peek(self, start_ms: float, end_ms: float) -> np.ndarray:
        """The buffered audio in [start_ms, end_ms) at 16 kHz, left in place."""
        bpm = bytes_per_ms(self._in_fmt())
        a = int(max(0.0, start_ms - self._buf_start_ms) * bpm)
        b = int(max(0.0, end_ms - self._buf_start_ms) * bpm)
        if self._in_fmt() == "audio/pcm":
            a, b = a - a % 2, b - b % 2
        fmt = self._in_fmt()
        return resample(wire_to_pcm(fmt, bytes(self._raw[a:b])), format_rate(fmt), 16000)

    def _drop_buffer(self) -> None:
        self._raw = bytearray()
        self._buf_start_ms = self._timeline_ms

    def buffered_ms(self) -> float:
        return self._timeline_ms - self._buf_start_ms

    def _commit(self, d: dict[str, Any]) -> None:
        ms = self.buffered_ms()
        if ms < MIN_COMMIT_MS:
            raise ProtocolError("input_audio_buffer_commit_empty",
                                "Error committing input audio buffer: buffer too small. "
                                "Expected at least 100ms of audio, but buffer only has "
                                f"{ms:.2f}ms of audio.")
        item_id = self._pending_user_id or new_id("item")
        self._pending_user_id = None
        self.turns.reset()
        self._commit_range(self._buf_start_ms, self._timeline_ms, item_id)

    def _clear(self, d: dict[str, Any]) -> None:
        self._drop_buffer()
        self.turns.reset()
        self._pending_user_id = None
        self._emit({"type": "input_audio_buffer.cleared"})

    def _commit_range(self, start_ms: float, end_ms: float, item_id: str) -> Item:
        pcm, raw, ms = self._take(start_ms, end_ms)
        item = Item(item_id, {"id": item_id, "type": "message", "object": "realtime.item",
                              "status": "completed", "role": "user",
                              "content": [{"type": "input_audio", "transcript": None}]},
                    audio=bytearray(raw), audio_fmt=self._in_fmt(), audio_ms=ms,
                    pcm16k=pcm, stt_pending=True)
        prev = self.conv.last_id()
        self.conv.add(item)
        self._emit({"type": "input_audio_buffer.committed", "previous_item_id": prev,
                    "item_id": item_id})
        self._item_added(item, prev)
        self.effects.append(Transcribe(item))
        return item

    # ---------------------------------------------------------- turn taking

    def speech_probabilities(self, probs: list[float], frame_ms: float) -> None:
        if self._td() is None:
            return
        for ev in self.turns.feed(probs, frame_ms):
            if ev.kind == "start":
                self._speech_started(ev)
            elif ev.kind == "stop":
                self._speech_stopped(ev)
            elif self._pending_user_id is not None:
                pcm = self._peek(self._speech_start_ms, ev.audio_ms) if ev.kind == "pause" \
                    else None
                self.effects.append(Speculate(self._pending_user_id, pcm, ev.audio_ms,
                                              self._td()["type"] == "semantic_vad"))

    def turn_hint(self, item_id: str, at_ms: int, p_end: float, transcript: str) -> None:
        """semantic_vad: the words of the turn in progress, up to the pause at
        ``at_ms``, were judged complete with probability ``p_end``.  Sets how
        long this pause must last to end the turn (ends it now if it already
        has).  Stale hints (speech came back, another turn) are ignored."""
        td = self._td()
        if (td is None or td["type"] != "semantic_vad" or item_id != self._pending_user_id
                or self.turns.pause_at != at_ms):
            return
        thr, short, mid, long = SEMANTIC[td["eagerness"]]
        if ends_open(transcript):
            wait = long               # "... the", "... of", "um": never complete
        elif opens_turn(transcript):
            wait = mid                # "Hi," -- and the name follows
        else:
            wait = short if p_end >= thr else mid if sounds_final(transcript) else long
        self.turn_hints.append((p_end, wait, transcript))
        del self.turn_hints[:-32]
        ev = self.turns.end_after(wait)
        if ev is not None:
            self._speech_stopped(ev)

    def turn_messages(self, transcript: str) -> list[dict[str, Any]]:
        """The chat the LLM would see if the turn in progress ended now with
        ``transcript`` (for judging whether it has)."""
        user = Item("preview", {"type": "message", "role": "user",
                                "content": [{"type": "input_audio", "transcript": None}]},
                    stt_text=transcript)
        p = response_params(self.session, None)
        req, _ = self._request_for(self.conv.items() + [user], p)
        return req.messages

    def _speech_started(self, ev: TurnEvent) -> None:
        self._pending_user_id = new_id("item")
        self._speech_start_ms = ev.audio_ms
        self._emit({"type": "input_audio_buffer.speech_started",
                    "audio_start_ms": ev.audio_ms, "item_id": self._pending_user_id})
        td = self._td()
        if td and td.get("interrupt_response", True) and self.active is not None:
            lag = max(0.0, self.turns.pos_ms - ev.onset_ms)
            self.cancel(self.active, "turn_detected", lag_ms=lag)

    def _speech_stopped(self, ev: TurnEvent) -> None:
        item_id = self._pending_user_id or new_id("item")
        self._pending_user_id = None
        self._emit({"type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": ev.audio_ms, "item_id": item_id})
        self._commit_range(self._speech_start_ms, ev.audio_ms, item_id)
        td = self._td()
        if td and td.get("create_response", True) and self.active is None:
            resp = self._start_response(response_params(self.session, None))
            resp.timings["speech_stopped"] = self.clock()

    # ------------------------------------------------------------ items

    def _item_added(self, item: Item, prev: str | None) -> None:
        pub = item.public()
        self._emit({"type": "conversation.item.added", "previous_item_id": prev, "item": pub})
        self._emit({"type": "conversation.item.done", "previous_item_id": prev,
                    "item": item.public()})

    def _item_create(self, d: dict[str, Any]) -> None:
        item = item_from_client(d.get("item"), self._in_fmt())
        if item.id in self.conv:
            raise ProtocolError("invalid_value",
                                f"Item with id '{item.id}' already exists.", "item.id")
        prev = d.get("previous_item_id")
        if prev is None:
            before = self.conv.add(item)
        elif prev == "root":
            before = self.conv.add(item, at_root=True)
        elif prev in self.conv:
            before = self.conv.add(item, previous_item_id=prev)
        else:
            raise ProtocolError("invalid_value",
                                f"Previous item with id '{prev}' not found.",
                                "previous_item_id")
        self._item_added(item, before)
        if item.stt_pending:
            self.effects.append(Transcribe(item))

    def _item_delete(self, d: dict[str, Any]) -> None:
        item_id = d.get("item_id")
        if not isinstance(item_id, str) or self.conv.delete(item_id) is None:
            raise ProtocolError("item_delete_invalid_item_id",
                                f"Error deleting item: the item with id '{item_id}' does "
                                "not exist.", "item_id")
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _item_retrieve(self, d: dict[str, Any]) -> None:
        item_id = d.get("item_id")
        item = self.conv.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise ProtocolError("item_retrieve_invalid_item_id",
                                f"Error retrieving item: the item with id '{item_id}' does "
                                "not exist.", "item_id")
        self._emit({"type": "conversation.item.retrieved", "item": item.public(with_audio=True)})

    def _item_truncate(self, d: dict[str, Any]) -> None:
        item_id = d.get("item_id")
        item = self.conv.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise ProtocolError("item_truncate_invalid_item_id",
                                f"Item with item_id not found: {item_id}", "item_id")
        if not item.is_model_audio():
            raise ProtocolError("unsupported_content_type",
                                "Only model output audio messages can be truncated.",
                                "item_id")
        if d.get("content_index", 0) != 0:
            raise ProtocolError("invalid_value", "Invalid 'content_index': expected 0.",
                                "content_index")
        end = d.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise ProtocolError("invalid_value",
                                "Invalid 'audio_end_ms': expected a non-negative integer.",
                                "audio_end_ms")
        resp = self.responses.get(item.response_id or "")
        if resp is not None and resp.msg is item:
            # still being generated: stop it where it stands first
            self.cancel(resp, "client_cancelled")
        if end > item.audio_ms + 0.5:
            raise ProtocolError("invalid_value",
                                f"Audio content of {int(item.audio_ms)}ms is already shorter "
                                f"than {end}ms", "audio_end_ms")
        item.cut_at(float(end))
        self._emit({"type": "conversation.item.truncated", "item_id": item.id,
                    "content_index": 0, "audio_end_ms": end})

    # ------------------------------------------------------------ responses

    def _response_create(self, d: dict[str, Any]) -> None:
        p = response_params(self.session, d.get("response"))
        if p["conversation"] == "auto" and self.active is not None:
            raise ProtocolError("conversation_already_has_active_response",
                                "Conversation already has an active response in progress: "
                                f"{self.active.id}. Wait until the response is finished "
                                "before creating a new one.")
        self._start_response(p)

    def _context(self, p: dict[str, Any]) -> list[Item]:
        if p["input"] is None:
            return self.conv.items()
        items: list[Item] = []
        for i, entry in enumerate(p["input"]):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                ref = self.conv.get(entry.get("id", ""))
                if ref is None:
                    raise ProtocolError("invalid_value",
                                        f"Item with id '{entry.get('id')}' not found.",
                                        f"response.input[{i}].id")
                items.append(ref)
            else:
                item = item_from_client(entry, self._in_fmt())
                item.id = new_id("item")   # inline items live only in this response
                item.data["id"] = item.id
                items.append(item)
        return items

    def _start_response(self, p: dict[str, Any]) -> Response:
        context = self._context(p)
        resp = Response(new_id("resp"), p, p["conversation"] == "auto", context)
        resp.timings["created"] = self.clock()
        self.responses[resp.id] = resp
        if resp.in_conversation:
            self.active = resp
        self._emit({"type": "response.created", "response": self._response_obj(resp)})
        for item in context:
            if item.stt_pending and item.id not in self.conv:
                self.effects.append(Transcribe(item))
        self.effects.append(StartResponse(resp))
        return resp

    def _response_obj(self, resp: Response) -> dict[str, Any]:
        p = resp.params
        return {
            "object": "realtime.response", "id": resp.id, "status": resp.status,
            "status_details": resp.status_details,
            "output": [i.public() for i in resp.output],
            "conversation_id": self.conversation_id if resp.in_conversation else None,
            "output_modalities": list(p["output_modalities"]),
            "max_output_tokens": p["max_output_tokens"],
            "audio": {"output": {"format": dict(p["format"]), "voice": p["voice"]}},
            "usage": resp.usage,
            "metadata": p["metadata"],
        }

    def _response_cancel(self, d: dict[str, Any]) -> None:
        rid = d.get("response_id")
        resp = self.responses.get(rid) if isinstance(rid, str) else self.active
        if resp is None and rid is None and self.responses:
            resp = next(reversed(self.responses.values()))
        if resp is None:
            raise ProtocolError("response_cancel_not_active",
                                "Cancellation failed: no active response found.")
        self.cancel(resp, "client_cancelled")

    # --- called by the response runner (through the driver) -------------

    def live(self, resp_id: str) -> Response | None:
        return self.responses.get(resp_id)

    def pending_items(self, resp: Response) -> list[Item]:
        return [i for i in resp.context if i.stt_pending]

    def llm_request(self, resp: Response) -> LlmRequest:
        req, resp.history = self._request_for(resp.context, resp.params)
        return req

    def _request_for(self, context: list[Item], p: dict[str, Any]
                     ) -> tuple[LlmRequest, History]:
        hist = build_history(context, p["instructions"], self.cfg.history_tokens,
                             self.count_tokens,
                             voice_examples(p["instructions"], self.cfg.voice_examples))
        mot = p["max_output_tokens"]
        max_tokens = self.cfg.max_reply_tokens if mot == "inf" else min(
            int(mot), self.cfg.max_reply_tokens * 4)
        tools = p["tools"] if p["tool_choice"] != "none" else []
        return LlmRequest(messages=hist.messages, tools=tools, tool_choice=p["tool_choice"],
                          max_tokens=max_tokens, temperature=self.cfg.temperature), hist

    def preview_request(self, transcript: str) -> tuple[LlmRequest, bool, Any] | None:
        """The request the response to the turn in progress would make if the
        turn ended now with ``transcript`` -- or None when ending it would
        start no response.  Returns (request, audio output?, voice)."""
        td = self._td()
        if td is None or not td.get("create_response", True) or not transcript:
            return None
        if self.active is not None and not td.get("interrupt_response", True):
            return None
        p = response_params(self.session, None)
        user = Item("preview", {"type": "message", "role": "user",
                                "content": [{"type": "input_audio", "transcript": None}]},
                    stt_text=transcript)
        req, _ = self._request_for(self.conv.items() + [user], p)
        return req, "audio" in p["output_modalities"], p["voice"]

    def mark(self, resp_id: str, key: str) -> None:
        resp = self.responses.get(resp_id)
        if resp is not None and key not in resp.timings:
            resp.timings[key] = self.clock()

    def add_timings(self, resp_id: str, times: dict[str, float]) -> None:
        resp = self.responses.get(resp_id)
        if resp is not None:
            for k, v in times.items():
                resp.timings.setdefault(k, v)

    def _open_message(self, resp: Response) -> Item:
        if resp.msg is not None:
            return resp.msg
        audio = resp.audio_out
        item = Item(new_id("item"), {"id": "", "type": "message", "object": "realtime.item",
                                     "status": "in_progress", "role": "assistant",
                                     "content": []},
                    audio_fmt=resp.params["format"]["type"] if audio else "",
                    response_id=resp.id)
        item.data["id"] = item.id
        resp.msg = item
        resp.msg_index = len(resp.output)
        resp.output.append(item)
        prev = self.conv.last_id()
        if resp.in_conversation:
            self.conv.add(item)
        self._emit({"type": "response.output_item.added", "response_id": resp.id,
                    "output_index": resp.msg_index, "item": item.public()}, resp.id)
        if resp.in_conversation:
            self._emit({"type": "conversation.item.added", "previous_item_id": prev,
                        "item": item.public()}, resp.id)
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        self._emit({"type": "response.content_part.added", "response_id": resp.id,
                    "item_id": item.id, "output_index": resp.msg_index, "content_index": 0,
                    "part": part}, resp.id)
        item.data["content"] = [{"type": "output_audio", "transcript": ""} if audio
                                else {"type": "output_text", "text": ""}]
        return item

    def resp_text(self, resp_id: str, delta: str) -> None:
        resp = self.responses.get(resp_id)
        if resp is None or not delta:
            return
        item = self._open_message(resp)
        resp.text += delta
        item.data["content"][0]["text"] = resp.text
        self._emit({"type": "response.output_text.delta", "response_id": resp.id,
                    "item_id": item.id, "output_index": resp.msg_index, "content_index": 0,
                    "delta": delta}, resp.id)

    def resp_audio(self, resp_id: str, wire: bytes, ms: float, text: str) -> None:
        resp = self.responses.get(resp_id)
        if resp is None:
            return
        item = self._open_message(resp)
        resp.text += text
        item.full_text = resp.text
        item.audio += wire
        item.audio_ms += ms
        resp.audio_ms += ms
        item.marks.append((item.audio_ms, len(resp.text)))
        item.set_transcript(resp.text)
        common = {"response_id": resp.id, "item_id": item.id,
                  "output_index": resp.msg_index, "content_index": 0}
        if text:
            self._emit({"type": "response.output_audio_transcript.delta", **common,
                        "delta": text}, resp.id, droppable=True)
        self._emit({"type": "response.output_audio.delta", **common,
                    "delta": b64encode(wire)}, resp.id, audio_ms=ms, droppable=True)

    def resp_tool_call(self, resp_id: str, name: str, arguments: str,
                       call_id: str | None = None) -> None:
        resp = self.responses.get(resp_id)
        if resp is None:
            return
        self._close_message(resp, "completed")
        call_id = call_id or new_id("call")
        item = Item(new_id("item"), {}, response_id=resp.id)
        item.data = {"id": item.id, "type": "function_call", "object": "realtime.item",
                     "status": "in_progress", "name": name, "call_id": call_id,
                     "arguments": ""}
        idx = len(resp.output)
        resp.output.append(item)
        prev = self.conv.last_id()
        if resp.in_conversation:
            self.conv.add(item)
        self._emit({"type": "response.output_item.added", "response_id": resp.id,
                    "output_index": idx, "item": item.public()}, resp.id)
        if resp.in_conversation:
            self._emit({"type": "conversation.item.added", "previous_item_id": prev,
                        "item": item.public()}, resp.id)
        common = {"response_id": resp.id, "item_id": item.id, "output_index": idx,
                  "call_id": call_id}
        self._emit({"type": "response.function_call_arguments.delta", **common,
                    "delta": arguments}, resp.id)
        item.data["arguments"] = arguments
        item.data["status"] = "completed"
        self._emit({"type": "response.function_call_arguments.done", **common, "name": name,
                    "arguments": arguments}, resp.id)
        if resp.in_conversation:
            self._emit({"type": "conversation.item.done", "previous_item_id": prev,
                        "item": item.public()}, resp.id)
        self._emit({"type": "response.output_item.done", "response_id": resp.id,
                    "output_index": idx, "item": item.public()}, resp.id)

    def _close_message(self, resp: Response, status: str) -> None:
        item = resp.msg
        if item is None:
            return
        resp.msg = None
        common = {"response_id": resp.id, "item_id": item.id,
                  "output_index": resp.msg_index, "content_index": 0}
        if resp.audio_out:
            transcript = item.data["content"][0].get("transcript") or ""
            self._emit({"type": "response.output_audio.done", **common}, resp.id)
            self._emit({"type": "response.output_audio_transcript.done", **common,
                        "transcript": transcript}, resp.id)
            part = {"type": "audio", "transcript": transcript}
        else:
            text = item.data["content"][0].get("text") or ""
            self._emit({"type": "response.output_text.done", **common, "text": text}, resp.id)
            part = {"type": "text", "text": text}
        self._emit({"type": "response.content_part.done", **common, "part": part}, resp.id)
        item.data["status"] = status
        if resp.in_conversation:
            prev = self.conv.previous_id(item.id) if item.id in self.conv else None
            self._emit({"type": "conversation.item.done", "previous_item_id": prev,
                        "item": item.public()}, resp.id)
        self._emit({"type": "response.output_item.done", "response_id": resp.id,
                    "output_index": resp.msg_index, "item": item.public()}, resp.id)

    def resp_finish(self, resp_id: str, stats: LlmStats | None = None,
                    error: str | None = None) -> None:
        resp = self.responses.get(resp_id)
        if resp is None:
            return
        if stats is not None:
            resp.stats = stats
        if error is not None:
            self._close_message(resp, "incomplete")
            self._done(resp, "failed", {"type": "failed", "error": {
                "type": "server_error", "code": "engine_error", "message": error}})
        elif resp.stats.finish_reason == "length" and resp.params["max_output_tokens"] != "inf":
            self._close_message(resp, "incomplete")
            self._done(resp, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
        else:
            self._close_message(resp, "completed")
            self._done(resp, "completed", None)

    def cancel(self, resp: Response, reason: str, lag_ms: float = 0.0) -> None:
        """Stop ``resp`` now; with audio, keep only what was spoken."""
        if resp.id not in self.responses:
            return
        item = resp.msg
        if item is not None and resp.audio_out:
            spoken = self._spoken_ms(resp, lag_ms)
            item.cut_at(resp.delivered_ms)
            said = item.text_at(spoken)
            item.set_transcript(said)
            resp.text = said
        self.effects.append(CancelResponse(resp.id))
        self._close_message(resp, "incomplete")
        self._done(resp, "cancelled", {"type": "cancelled", "reason": reason})

    def _spoken_ms(self, resp: Response, lag_ms: float) -> float:
        """How much of the response's audio the user has heard: what reached
        the client, limited by the wall time since the first delta reached
        it (a client plays in real time), minus the VAD's detection lag."""
        if resp.first_delivery is None:
            return 0.0
        elapsed = (self.clock() - resp.first_delivery) * 1000.0 - lag_ms
        return max(0.0, min(resp.delivered_ms, elapsed))

    def audio_delivered(self, resp_id: str, ms: float) -> None:
        resp = self.responses.get(resp_id)
        if resp is None:
            return
        if resp.first_delivery is None:
            resp.first_delivery = self.clock()
        resp.delivered_ms += ms

    def _done(self, resp: Response, status: str, details: dict[str, Any] | None) -> None:
        resp.status = status
        resp.status_details = details
        hist = resp.history
        transcript_tokens = self.count_tokens(hist.transcript_text) if hist and \
            hist.transcript_text else 0
        resp.usage = usage(resp.stats.prompt_tokens, transcript_tokens,
                           hist.audio_ms_in if hist else 0.0,
                           resp.stats.completion_tokens, resp.audio_ms)
        resp.timings["done"] = self.clock()
        self._emit({"type": "response.done", "response": self._response_obj(resp)}, resp.id)
        self.responses.pop(resp.id, None)
        if self.active is resp:
            self.active = None
        self.finished.append(resp)
        del self.finished[:-32]

    # -------------------------------------------------------- transcription

    def transcribed(self, item: Item, text: str, seconds: float,
                    model: str | None = None) -> None:
        """STT of ``item`` ended; ``model`` names the model that ran, which the
        ``completed`` event's usage carries (OpenAI's SDK types keep an extra
        field), so the ledger names it rather than the model the client asked for."""
        item.stt_text = text
        item.stt_pending = False
        item.pcm16k = None
        if self._transcription_on() and item.id in self.conv:
            item.data["content"][0]["transcript"] = text
            self._emit({"type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item.id, "content_index": 0, "delta": text})
            self._emit({"type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item.id, "content_index": 0, "transcript": text,
                        "usage": {"type": "duration", "seconds": round(seconds, 3),
                                  **({"model": model} if model else {})}})

    def transcription_failed(self, item: Item, message: str) -> None:
        item.stt_text = ""
        item.stt_pending = False
        item.pcm16k = None
        if self._transcription_on() and item.id in self.conv:
            self._emit({"type": "conversation.item.input_audio_transcription.failed",
                        "item_id": item.id, "content_index": 0,
                        "error": {"type": "transcription_error", "code": "transcription_failed",
                                  "message": message, "param": None}})

    def close(self) -> None:
        """The socket is gone: stop every response (no events needed)."""
        for rid in list(self.responses):
            self.effects.append(CancelResponse(rid))
        self.responses.clear()
        self.active = None
