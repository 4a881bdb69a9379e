"""Audio in the engine's wire formats: GA ``audio/pcm`` (24 kHz), ``audio/pcmu``
and ``audio/pcma`` (G.711, 8 kHz).

Input is decoded once per append into 16 kHz int16 for VAD and STT; output
(24 kHz int16 from TTS) is encoded into the session's output format.  Both
directions keep a streaming soxr resampler, so chunk boundaries add no
clicks.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
import soxr

from ..audio import g711
from ..audio.resample import StreamResampler

PCM = "audio/pcm"
PCMU = "audio/pcmu"
PCMA = "audio/pcma"
FORMATS = (PCM, PCMU, PCMA)


def format_rate(fmt: str) -> int:
    return 24000 if fmt == PCM else 8000


def bytes_per_ms(fmt: str) -> int:
    """Wire bytes per millisecond of audio (48 for pcm16 at 24 kHz, 8 for G.711)."""
    return 48 if fmt == PCM else 8


# ------------------------------------------------------------------ G.711
# one codec for the whole gateway: openopen8.audio.g711 (bit-exact with audioop)

def ulaw_to_pcm(b: bytes) -> np.ndarray:
    return g711.ulaw_decode(b)


def alaw_to_pcm(b: bytes) -> np.ndarray:
    return g711.alaw_decode(b)


def pcm_to_ulaw(x: np.ndarray) -> bytes:
    return g711.ulaw_encode(x)


def pcm_to_alaw(x: np.ndarray) -> bytes:
    return g711.alaw_encode(x)


# ------------------------------------------------------------ base64 helpers

class AudioDecodeError(ValueError):
    pass


def b64decode(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise AudioDecodeError("audio is not valid base64") from exc


def b64encode(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


# ------------------------------------------------------------------ streams

def wire_to_pcm(fmt: str, raw: bytes) -> np.ndarray:
    """Wire bytes → int16 samples at the format's own rate."""
    if fmt == PCMU:
        return ulaw_to_pcm(raw)
    if fmt == PCMA:
        return alaw_to_pcm(raw)
    if len(raw) % 2:
        raw = raw[:-1]
    return np.frombuffer(raw, dtype="<i2")


class InputDecoder:
    """Wire audio → 16 kHz int16, streaming."""

    def __init__(self, fmt: str, out_rate: int = 16000) -> None:
        self.fmt = fmt
        self._rs = StreamResampler(format_rate(fmt), out_rate)

    def decode(self, raw: bytes) -> np.ndarray:
        pcm = wire_to_pcm(self.fmt, raw)
        if not pcm.size:
            return np.zeros(0, dtype=np.int16)
        return self._rs.process(pcm)


class OutputEncoder:
    """24 kHz int16 → wire bytes in ``fmt``, streaming."""

    def __init__(self, fmt: str, in_rate: int = 24000) -> None:
        self.fmt = fmt
        self._rs = None
        if format_rate(fmt) != in_rate:
            self._rs = StreamResampler(in_rate, format_rate(fmt))

    def encode(self, pcm24k: np.ndarray, last: bool = False) -> bytes:
        x = pcm24k
        if self._rs is not None:
            x = self._rs.process(x)
            if last:
                tail = self._rs.flush()
                x = np.concatenate([x, tail]) if tail.size else x
        if self.fmt == PCMU:
            return pcm_to_ulaw(x)
        if self.fmt == PCMA:
            return pcm_to_alaw(x)
        return x.astype("<i2", copy=False).tobytes()


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot int16 resampling (TTS output, test audio)."""
    if in_rate == out_rate:
        return x.astype(np.int16, copy=False)
    return soxr.resample(x, in_rate, out_rate, quality="HQ").astype(np.int16, copy=False)
