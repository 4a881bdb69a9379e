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

def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


_ULAW_DEC = _ulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()


_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _ulaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 u-law, bit-exact with the classic Sun reference (and audioop)."""
    v = x.astype(np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 33
    seg = np.searchsorted(_SEG_UEND, v)          # first seg with v <= end
    u = (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0x0F)
    u = np.where(seg >= 8, 0x7F, u)
    return (u ^ mask).astype(np.uint8)


def _alaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 A-law, bit-exact with the classic Sun reference (and audioop)."""
    v = x.astype(np.int32) >> 3
    neg = v < 0
    mask = np.where(neg, 0x55, 0xD5)
    v = np.where(neg, -v - 1, v)
    seg = np.searchsorted(_SEG_AEND, v)
    s7 = np.minimum(seg, 7)
    a = (s7 << 4) | (np.where(s7 < 2, v >> 1, v >> s7) & 0x0F)
    a = np.where(seg >= 8, 0x7F, a)
    return (a ^ mask).astype(np.uint8)


def ulaw_to_pcm(b: bytes) -> np.ndarray:
    return _ULAW_DEC[np.frombuffer(b, dtype=np.uint8)]


def alaw_to_pcm(b: bytes) -> np.ndarray:
    return _ALAW_DEC[np.frombuffer(b, dtype=np.uint8)]


def pcm_to_ulaw(x: np.ndarray) -> bytes:
    return _ulaw_encode(x).tobytes()


def pcm_to_alaw(x: np.ndarray) -> bytes:
    return _alaw_encode(x).tobytes()


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
        self._rs = soxr.ResampleStream(format_rate(fmt), out_rate, 1, dtype="int16",
                                       quality="HQ")

    def decode(self, raw: bytes) -> np.ndarray:
        pcm = wire_to_pcm(self.fmt, raw)
        if not pcm.size:
            return np.zeros(0, dtype=np.int16)
        return self._rs.resample_chunk(pcm)


class OutputEncoder:
    """24 kHz int16 → wire bytes in ``fmt``, streaming."""

    def __init__(self, fmt: str, in_rate: int = 24000) -> None:
        self.fmt = fmt
        self._rs = None
        if format_rate(fmt) != in_rate:
            self._rs = soxr.ResampleStream(in_rate, format_rate(fmt), 1, dtype="int16",
                                           quality="HQ")

    def encode(self, pcm24k: np.ndarray, last: bool = False) -> bytes:
        x = pcm24k
        if self._rs is not None:
            x = self._rs.resample_chunk(x, last=last)
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
