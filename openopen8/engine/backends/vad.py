"""VAD backends: Silero v6 (ONNX, shipped inside faster-whisper) and webrtcvad.

Silero runs on onnxruntime with one thread; a session's stream carries the
LSTM state and the 64-sample context between 32 ms frames itself, so one
ONNX session serves every stream.  A 20 ms append costs one call of about a
tenth of a millisecond, made on the VAD worker thread.
"""

from __future__ import annotations

import numpy as np

from .base import Framer, Loadable, MissingDependency, VAD_RATE, Worker
from . import assets

_FRAME = 512        # samples per Silero frame at 16 kHz (32 ms)
_CONTEXT = 64


class SileroStream:
    frame_ms = 32

    def __init__(self, vad: "SileroVad") -> None:
        self._vad = vad
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._framer = Framer(_FRAME, np.float32)

    async def probabilities(self, pcm16k: np.ndarray) -> list[float]:
        frames = self._framer.push(pcm16k.astype(np.float32) / 32768.0)
        if not len(frames):
            return []
        return await self._vad.worker.run(self._run, frames)

    def _run(self, frames: np.ndarray) -> list[float]:
        ctx = np.concatenate([self._context[None, :], frames[:-1, -_CONTEXT:]], axis=0)
        batch = np.concatenate([ctx, frames], axis=1)
        self._context = frames[-1, -_CONTEXT:].copy()
        probs, self._h, self._c = self._vad.session.run(
            None, {"input": batch, "h": self._h, "c": self._c})
        return [float(p) for p in np.asarray(probs).reshape(-1)]


class SileroVad(Loadable):
    name = "silero-v6"

    def __init__(self, cache_dir: str) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.worker = Worker("vad")
        self.session = None

    def _load(self) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependency("onnxruntime", "VAD (silero)") from None
        path = assets.pinned_file("faster_whisper/assets/silero_vad_v6.onnx",
                                  "faster-whisper", "VAD (silero)", self.cache_dir)
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                                    sess_options=opts)

    def stream(self) -> SileroStream:
        return SileroStream(self)


class WebrtcStream:
    frame_ms = 30

    def __init__(self, vad: "WebrtcVad") -> None:
        self._vad = vad
        self._inst = vad.module.Vad(vad.mode)
        self._framer = Framer(VAD_RATE * self.frame_ms // 1000, np.int16)

    async def probabilities(self, pcm16k: np.ndarray) -> list[float]:
        frames = self._framer.push(pcm16k)
        # ~10 µs per frame: cheaper than a thread hop
        return [1.0 if self._inst.is_speech(f.astype("<i2").tobytes(), VAD_RATE) else 0.0
                for f in frames]


class WebrtcVad(Loadable):
    name = "webrtcvad"

    def __init__(self, mode: int = 2) -> None:
        super().__init__()
        self.mode = int(mode)
        self.module = None

    def _load(self) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise MissingDependency("webrtcvad-wheels", "VAD (webrtc)") from None
        self.module = webrtcvad

    def stream(self) -> WebrtcStream:
        return WebrtcStream(self)
