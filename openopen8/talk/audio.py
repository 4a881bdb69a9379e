"""Audio for the talk client: read any WAV (or raw PCM16), mix to mono,
resample with soxr, encode to the session's wire format (PCM16 or G.711,
with the gateway's own codec), and write the reply as a WAV.

Samples are numpy arrays: float32 in [-1, 1] while being converted, int16
at the edges.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from ..audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode


class AudioError(Exception):
    """A file that cannot be read as audio, or a format we cannot speak."""


# -- wire formats --------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioFormat:
    """A session audio format: ``pcm16`` at ``rate`` Hz, or G.711 ``pcmu``/``pcma`` (8 kHz)."""

    kind: str = "pcm16"
    rate: int = 24000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.kind == "pcm16" else 1

    def bytes_for_ms(self, ms: float) -> int:
        return int(self.rate * ms / 1000) * self.bytes_per_sample

    def ms_of(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_sample / self.rate * 1000

    def ga(self) -> dict:
        if self.kind == "pcm16":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": "audio/" + self.kind}

    def beta(self) -> str:
        return {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}[self.kind]

    @classmethod
    def from_ga(cls, fmt: object, default: "AudioFormat") -> "AudioFormat":
        if not isinstance(fmt, dict):
            return default
        kind = {"audio/pcm": "pcm16", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}.get(fmt.get("type"))
        if kind is None:
            return default
        rate = int(fmt.get("rate") or 24000) if kind == "pcm16" else 8000
        return cls(kind, rate)

    @classmethod
    def from_beta(cls, name: object, default: "AudioFormat", rate: object = None) -> "AudioFormat":
        """A beta format name; ``rate`` is openopen8's ``*_audio_sample_rate`` extension."""
        kind = {"pcm16": "pcm16", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}.get(name)  # type: ignore[arg-type]
        if kind is None:
            return default
        if kind != "pcm16":
            return cls(kind, 8000)
        return cls(kind, rate if isinstance(rate, int) and rate > 0 else 24000)

    def encode(self, samples: np.ndarray) -> bytes:
        """int16 samples at ``self.rate`` → wire bytes."""
        if self.kind == "pcm16":
            return samples.astype("<i2").tobytes()
        return (ulaw_encode if self.kind == "pcmu" else alaw_encode)(samples)

    def decode(self, data: bytes) -> np.ndarray:
        """Wire bytes → int16 samples at ``self.rate``."""
        if self.kind == "pcm16":
            return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)
        return (ulaw_decode if self.kind == "pcmu" else alaw_decode)(data)


def parse_format(name: str, rate: int = 24000) -> AudioFormat:
    """``pcm16`` | ``pcmu`` (``g711_ulaw``) | ``pcma`` (``g711_alaw``)."""
    kind = {"pcm16": "pcm16", "pcmu": "pcmu", "g711_ulaw": "pcmu", "pcma": "pcma",
            "g711_alaw": "pcma"}.get(name.strip().lower())
    if kind is None:
        raise AudioError(f"unknown audio format {name!r}: use pcm16, pcmu or pcma")
    return AudioFormat(kind, rate if kind == "pcm16" else 8000)


# -- reading input ---------------------------------------------------------------------------

@dataclass
class Clip:
    """Decoded audio: float32 samples, shape (frames, channels), at ``rate`` Hz."""

    samples: np.ndarray
    rate: int

    @property
    def channels(self) -> int:
        return self.samples.shape[1]

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.rate


_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE


def read_wav(data: bytes) -> Clip:
    """A RIFF/WAVE file: PCM 8/16/24/32-bit, float 32/64-bit, A-law, µ-law, or
    WAVE_FORMAT_EXTENSIBLE around any of those; any rate and channel count."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise AudioError("not a RIFF/WAVE file")
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        if cid == b"fmt ":
            fmt = data[start:start + size]
        elif cid == b"data":
            body = data[start:start + size]  # a streamed file may claim more than it has
            if size in (0, 0xFFFFFFFF):
                body = data[start:]
        pos = start + size + (size & 1)
    if fmt is None or len(fmt) < 16 or body is None:
        raise AudioError("WAV file without a fmt or data chunk")
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]
    if channels < 1 or rate < 1000:
        raise AudioError(f"WAV file with {channels} channels at {rate} Hz")
    width = max(1, align // channels) if align else max(1, bits // 8)
    usable = len(body) // (width * channels) * width * channels
    raw = body[:usable]
    if tag == _PCM and width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif tag == _PCM and width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif tag == _PCM and width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v & 0x800000, v - 0x1000000, v)).astype(np.float32) / 8388608
    elif tag == _PCM and width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648).astype(np.float32)
    elif tag == _FLOAT and width in (4, 8):
        x = np.frombuffer(raw, "<f4" if width == 4 else "<f8").astype(np.float32)
    elif tag in (_ALAW, _ULAW) and width == 1:
        x = (alaw_decode if tag == _ALAW else ulaw_decode)(raw).astype(np.float32) / 32768
    else:
        raise AudioError(f"unsupported WAV encoding (format tag {tag:#x}, {bits} bits)")
    return Clip(np.clip(x, -1, 1).reshape(-1, channels), rate)


def read_raw_pcm16(data: bytes, rate: int, channels: int = 1) -> Clip:
    """Headerless signed 16-bit little-endian PCM."""
    usable = len(data) // (2 * channels) * 2 * channels
    x = np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768
    return Clip(x.reshape(-1, channels), rate)


def load_clip(path: Path, rate: int | None = None, channels: int = 1) -> Clip:
    """A WAV file (its header decides), or raw PCM16 when ``rate`` is given and
    the file has no RIFF header."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:4] in (b"RIFF", b"RF64"):
        return read_wav(data)
    if rate is None:
        raise AudioError(f"{path} is not a WAV file; for raw PCM16 give its sample rate with --rate")
    return read_raw_pcm16(data, rate, channels)


def to_mono(clip: Clip) -> np.ndarray:
    return clip.samples.mean(axis=1, dtype=np.float32) if clip.channels > 1 else clip.samples[:, 0]


def resample(mono: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out or mono.size == 0:
        return mono.astype(np.float32)
    return soxr.resample(mono.astype(np.float32), rate_in, rate_out, quality="HQ")


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def prepare_samples(clip: Clip, fmt: AudioFormat) -> np.ndarray:
    """The clip as int16 mono samples at ``fmt``'s rate (``fmt.encode`` makes the wire bytes)."""
    return to_int16(resample(to_mono(clip), clip.rate, fmt.rate))


def prepare(clip: Clip, fmt: AudioFormat) -> bytes:
    """The clip as wire bytes in ``fmt``: mono, resampled, encoded."""
    return fmt.encode(prepare_samples(clip, fmt))


#: a frame is speech when it is this far above the noise floor (dB) ...
SPEECH_OVER_FLOOR_DB = 12.0
#: ... and at least this loud (dBFS); the floor is the 10th percentile of the frames' RMS
SPEECH_MIN_DBFS = -50.0


def speech_ends(samples: np.ndarray, rate: int, frame_ms: int = 20,
                gap_ms: float = 500.0) -> list[int]:
    """Where speech ends in int16 ``samples``: the indices of the ``frame_ms``
    frames (the chunks they are sent in) that are the last above the noise
    floor before ``gap_ms`` of quiet, or before the end.  A server VAD ends a
    turn a silence window later; these frames are when the speaker stopped.

    Not a VAD: a frame is speech when its RMS is :data:`SPEECH_OVER_FLOOR_DB`
    over the floor (but no more than 20 dB under the loudest frame, for a clip
    that is speech throughout) and above :data:`SPEECH_MIN_DBFS`."""
    n = int(rate * frame_ms / 1000)
    if n <= 0 or samples.size == 0:
        return []
    x = samples.astype(np.float64) / 32768
    x = np.concatenate([x, np.zeros(-x.size % n)])
    rms = np.sqrt(np.mean(x.reshape(-1, n) ** 2, axis=1))
    floor = float(np.percentile(rms, 10))
    threshold = max(min(floor * 10 ** (SPEECH_OVER_FLOOR_DB / 20), float(rms.max()) / 10),
                    10 ** (SPEECH_MIN_DBFS / 20))
    loud = np.flatnonzero(rms >= threshold)
    if loud.size == 0:
        return []
    gaps = (np.diff(loud) - 1) * frame_ms >= gap_ms
    return [int(i) for i in loud[:-1][gaps]] + [int(loud[-1])]


def silence(fmt: AudioFormat, ms: float) -> bytes:
    return fmt.encode(np.zeros(int(fmt.rate * ms / 1000), dtype=np.int16))


def chunks(data: bytes, fmt: AudioFormat, ms: int = 20) -> list[bytes]:
    size = fmt.bytes_for_ms(ms)
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- writing the reply -----------------------------------------------------------------------

def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """int16 mono samples as a PCM16 WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
