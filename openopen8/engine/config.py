"""Engine configuration: which backends, where their models are, threads, and
the session defaults the engine announces in ``session.created``.

Everything has a default that works after ``scripts/install-local.sh``;
:meth:`EngineConfig.from_mapping` accepts a plain dict (the gateway's
settings), ignoring keys it does not know and rejecting bad values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

#: the model name the local engine serves
MODEL_NAME = "openopen8-local"

VAD_CHOICES = ("silero", "webrtc", "fake")
STT_CHOICES = ("whisper-tiny.en", "whisper-base", "fake")
LLM_CHOICES = ("smollm2", "chat-completions", "fake")
TTS_CHOICES = ("piper", "espeak", "fake")

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Your answers are spoken aloud, so give one or "
    "two short, correct sentences in plain words. Never use lists, links or markdown. "
    "If you are not sure, say so.")

#: with the default instructions, these exchanges follow the system message:
#: a 135M model copies the form (short, spoken, no links) and the directness
#: of examples far better than it follows instructions (bench/local_latency.py:
#: key words right in 23 of 30 phrasings with them, 19 without).  None of the
#: benchmark's questions is among them.
VOICE_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("How do I boil an egg?",
     "Put the egg in boiling water for about nine minutes, then cool it in cold water."),
    ("Can you recommend a website for recipes?",
     "I can't look things up online, but a big recipe site or a good cookbook will have "
     "plenty of ideas."),
    ("Hi there!", "Hello! How can I help you today?"),
)


def voice_examples(instructions: str, enabled: bool = True) -> list[dict[str, str]]:
    """The example exchanges for ``instructions`` (only the default persona has them)."""
    if not enabled or instructions != DEFAULT_INSTRUCTIONS:
        return []
    out: list[dict[str, str]] = []
    for q, a in VOICE_EXAMPLES:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


def model_threads(cores: int | None = None) -> int:
    """Threads for the speech-to-text and the LLM model by default.

    On 2 cores, one thread each: the models run at once (one session's
    reply beside another's transcription, a reply's next words beside its
    first clause's speech), and two two-thread pools on two cores wait on
    each other at every barrier.  The voice benchmark measured one thread
    each as fast for a single session (semantic_vad first audio median
    0.45 s against 0.49 s) and faster for several (sessions ending together:
    2 / 4 / 6 at 0.61 / 0.90 / 1.33 s against 0.69 / 1.05 / 1.62 s).  More
    cores keep two each (not measured here)."""
    cores = cores if cores is not None else (os.cpu_count() or 2)
    return 1 if cores <= 2 else 2


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "openopen8"


@dataclass
class EngineConfig:
    # backends
    vad: str = "silero"
    stt: str = "whisper-tiny.en"
    llm: str = "smollm2"
    tts: str = "piper"
    #: encode only the utterance (+5 s) instead of a 30 s window (see stt.py)
    stt_short_window: bool = True
    # threads per model: one each on a 2-core machine (see model_threads)
    stt_threads: int = field(default_factory=model_threads)
    llm_threads: int = field(default_factory=model_threads)
    tts_threads: int = 1
    #: where the joined whisper-base model and the hash-check marks live
    cache_dir: str = field(default_factory=lambda: str(default_cache_dir()))
    #: optional file overrides (a GGUF, a Piper .onnx, a CTranslate2 folder);
    #: overridden files are not hash-checked against the pins
    llm_model_path: str | None = None
    tts_model_path: str | None = None
    stt_model_path: str | None = None
    #: OpenAI-compatible chat completions (llm = "chat-completions")
    chat_base_url: str = "http://127.0.0.1:11434/v1"
    chat_model: str = "llama3.2"
    chat_api_key: str | None = None
    chat_timeout_s: float = 60.0
    # webrtcvad aggressiveness 0..3
    webrtc_mode: int = 2
    # generation
    max_reply_tokens: int = 120
    #: greedy decoding: SmolLM2-135M gets more facts right without sampling
    temperature: float = 0.0
    #: a spoken reply stops after this many sentences (0 = no limit), unless
    #: the user asks for more ("tell me more", "explain", "a story", "steps")
    #: -- then three times as many; the response still completes normally
    max_reply_sentences: int = 3
    #: the default persona's example exchanges (see VOICE_EXAMPLES)
    voice_examples: bool = True
    #: conversation items kept per session (oldest dropped), and the history
    #: the LLM sees (most recent items that fit this many tokens)
    max_items: int = 64
    history_tokens: int = 600
    # session defaults (what session.created announces)
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "alloy"
    vad_threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 400
    #: start transcribing once a pause in speech reaches this many ms, before
    #: the turn is confirmed (0 = off); if speech resumes, the guess is dropped
    speculative_stt_ms: int = 64
    #: semantic_vad: a pause this long has the words so far transcribed and
    #: judged (complete or not), which sets how much more silence ends the turn
    semantic_pause_ms: int = 64
    #: the first clause of a spoken reply goes to TTS after at most this many
    #: words even without punctuation (0 = wait for a comma or sentence end)
    first_clause_words: int = 4
    # audio out: one delta per this many ms
    audio_delta_ms: int = 120
    #: at most this much synthesized audio waits for the client per session
    max_queued_audio_ms: int = 3000

    def __post_init__(self) -> None:
        for name, choices in (("vad", VAD_CHOICES), ("stt", STT_CHOICES),
                              ("llm", LLM_CHOICES), ("tts", TTS_CHOICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"engine {name} must be one of {', '.join(choices)}; "
                                 f"got {getattr(self, name)!r}")
        for name in ("stt_threads", "llm_threads", "tts_threads", "max_items",
                     "history_tokens", "audio_delta_ms", "max_reply_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"engine {name} must be at least 1")
        if not 20 <= self.audio_delta_ms <= 1000:
            raise ValueError("engine audio_delta_ms must be between 20 and 1000")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "EngineConfig":
        if data is None:
            return cls()
        if isinstance(data, EngineConfig):
            return data
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(data).items() if k in known and v is not None})

    def backend_key(self) -> tuple:
        """What identifies a set of loaded models (sessions share them)."""
        return (self.vad, self.stt, self.llm, self.tts, self.stt_threads, self.llm_threads,
                self.tts_threads, self.llm_model_path, self.tts_model_path,
                self.stt_model_path, self.stt_short_window, self.chat_base_url, self.chat_model,
                self.webrtc_mode, self.cache_dir)

    def redacted(self) -> dict[str, Any]:
        """For logs: never the API key."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d.get("chat_api_key"):
            d["chat_api_key"] = "***"
        return d
