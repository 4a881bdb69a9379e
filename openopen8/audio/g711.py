"""G.711 μ-law and A-law codecs as numpy lookup tables.

Python 3.13 removed ``audioop``; these tables reproduce its (and Sun's
reference ``g711.c``) results exactly.  Decoding is a 256-entry table indexed
by the code byte; encoding is a 65,536-entry table indexed by the int16 sample
viewed as uint16.  Both are built once, lazily, in a few milliseconds.
"""

from __future__ import annotations

import numpy as np

_tables: dict[str, np.ndarray] = {}


def _segment(mag: np.ndarray, ends: list[int]) -> np.ndarray:
    """Index of the first segment end >= mag (len(ends) when above all)."""
    return np.searchsorted(np.asarray(ends, dtype=np.int64), mag, side="left")


def _build_ulaw() -> None:
    bias, clip = 0x84, 8159
    ends = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
    pcm = np.arange(-32768, 32768, dtype=np.int64) >> 2
    neg = pcm < 0
    mag = np.where(neg, -pcm, pcm)
    mask = np.where(neg, 0x7F, 0xFF)
    mag = np.minimum(mag, clip) + (bias >> 2)
    seg = _segment(mag, ends)
    code = np.where(seg >= 8, 0x7F,
                    (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF))
    enc = (code ^ mask).astype(np.uint8)
    # index by the uint16 view of the int16 sample
    _tables["ulaw_enc"] = np.roll(enc, -32768)
    u = ~np.arange(256, dtype=np.int64) & 0xFF
    t = ((u & 0x0F) << 3) + bias
    t = t << ((u & 0x70) >> 4)
    _tables["ulaw_dec"] = np.where(u & 0x80, bias - t, t - bias).astype(np.int16)


def _build_alaw() -> None:
    ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]
    pcm = np.arange(-32768, 32768, dtype=np.int64) >> 3
    neg = pcm < 0
    mag = np.where(neg, -pcm - 1, pcm)
    mask = np.where(neg, 0x55, 0xD5)
    seg = _segment(mag, ends)
    s7 = np.minimum(seg, 7)
    low = np.where(s7 < 2, (mag >> 1) & 0xF, (mag >> s7) & 0xF)
    code = np.where(seg >= 8, 0x7F, (s7 << 4) | low)
    enc = (code ^ mask).astype(np.uint8)
    _tables["alaw_enc"] = np.roll(enc, -32768)
    a = np.arange(256, dtype=np.int64) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    _tables["alaw_dec"] = np.where(a & 0x80, t, -t).astype(np.int16)


def _table(name: str) -> np.ndarray:
    tab = _tables.get(name)
    if tab is None:
        (_build_ulaw if name.startswith("ulaw") else _build_alaw)()
        tab = _tables[name]
    return tab


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes -> int16 samples."""
    return _table("ulaw_dec")[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes -> int16 samples."""
    return _table("alaw_dec")[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> μ-law bytes."""
    return _table("ulaw_enc")[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> A-law bytes."""
    return _table("alaw_enc")[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()
