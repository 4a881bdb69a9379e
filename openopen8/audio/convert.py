"""Format conversion: bytes in one :class:`Fmt`, bytes out in another."""

from __future__ import annotations

import base64
import binascii

import numpy as np
import soxr

from . import g711
from .formats import Fmt
from .resample import StreamResampler

def decode(data: bytes, kind: str) -> np.ndarray:
    if kind == "pcm":
        return np.frombuffer(data, dtype="<i2")
    if kind == "pcmu":
        return g711.ulaw_decode(data)
    return g711.alaw_decode(data)


def encode(samples: np.ndarray, kind: str) -> bytes:
    if kind == "pcm":
        return samples.astype("<i2", copy=False).tobytes()
    if kind == "pcmu":
        return g711.ulaw_encode(samples)
    return g711.alaw_encode(samples)


def b64decode(text: str) -> bytes:
    """Lenient base64 (no validation pass: OpenAI's own server is lenient)."""
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        raise ValueError("audio is not valid base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class StreamConverter:
    """Converts a continuous stream of audio chunks from ``src`` to ``dst``.

    Keeps resampler state across chunks and carries an odd trailing byte of
    PCM16 over to the next chunk, so chunk boundaries may fall anywhere.
    """

    __slots__ = ("src", "dst", "_rs", "_carry", "samples_in", "samples_out")

    def __init__(self, src: Fmt, dst: Fmt, quality: str = "HQ") -> None:
        self.src = src
        self.dst = dst
        self._rs = StreamResampler(src.rate, dst.rate, quality) if src.rate != dst.rate else None
        self._carry = b""
        self.samples_in = 0     # counted at the source rate
        self.samples_out = 0    # counted at the destination rate

    def process(self, data: bytes) -> bytes:
        src = self.src
        if src.kind == "pcm":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) & 1:
                self._carry = data[-1:]
                data = data[:-1]
        x = decode(data, src.kind)
        self.samples_in += len(x)
        if self._rs is not None:
            x = self._rs.process(x)
        self.samples_out += len(x)
        return encode(x, self.dst.kind)

    def flush(self) -> bytes:
        """End of a continuous stretch: everything still held, then reset."""
        self._carry = b""
        if self._rs is None:
            return b""
        x = self._rs.flush()
        self.samples_out += len(x)
        return encode(x, self.dst.kind) if len(x) else b""

    def reset(self) -> None:
        self._carry = b""
        if self._rs is not None:
            self._rs.reset()


def convert_once(data: bytes, src: Fmt, dst: Fmt, quality: str = "HQ") -> bytes:
    """One complete clip (e.g. the audio of a conversation item)."""
    if src == dst:
        return data
    if src.kind == "pcm" and len(data) & 1:
        data = data[:-1]
    x = decode(data, src.kind)
    if src.rate != dst.rate and len(x):
        y = soxr.resample(x.astype(np.float32) / 32768, src.rate, dst.rate, quality=quality)
        x = np.clip(np.rint(y * 32768.0), -32768, 32767).astype(np.int16)
    return encode(x, dst.kind)
