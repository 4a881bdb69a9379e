"""Audio formats as the gateway understands them, and GA ``format`` objects.

A :class:`Fmt` is ``(kind, rate)`` with ``kind`` one of ``pcm`` (16-bit signed
little-endian mono), ``pcmu`` (G.711 μ-law) or ``pcma`` (G.711 A-law); G.711
is always 8 kHz.  On the wire (GA) these are ``{"type": "audio/pcm",
"rate": 24000}``, ``{"type": "audio/pcmu"}`` and ``{"type": "audio/pcma"}``.
"""

from __future__ import annotations

import reprlib
from typing import Any, NamedTuple


class Fmt(NamedTuple):
    kind: str   # "pcm" | "pcmu" | "pcma"
    rate: int

    def to_ga(self) -> dict[str, Any]:
        if self.kind == "pcm":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": "audio/" + self.kind}

    @property
    def bytes_per_ms(self) -> float:
        return self.rate * (2 if self.kind == "pcm" else 1) / 1000

    def __str__(self) -> str:  # for messages
        return f"audio/pcm@{self.rate}" if self.kind == "pcm" else f"audio/{self.kind}"


PCM24 = Fmt("pcm", 24000)
PCMU = Fmt("pcmu", 8000)
PCMA = Fmt("pcma", 8000)

#: PCM rates a client may declare.  Anything else is refused with
#: ``invalid_value`` rather than guessed at.
SUPPORTED_PCM_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

#: What OpenAI (GA and beta) and Azure accept natively.
OPENAI_FORMATS = frozenset({PCM24, PCMU, PCMA})

_KINDS = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}


#: a client's value as a message quotes it: short, whatever its size or depth
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 40
_QUOTE.maxlong = 20
_QUOTE.maxlevel = 2
quote = _QUOTE.repr


class FormatError(ValueError):
    def __init__(self, message: str, subfield: str = "") -> None:
        super().__init__(message)
        self.subfield = subfield   # "" (the format) | "type" | "rate"


def parse_ga_format(obj: Any, default_rate: int = 24000) -> Fmt:
    """A GA ``format`` object -> :class:`Fmt`; :class:`FormatError` if the
    gateway cannot handle it.  A ``audio/pcm`` without ``rate`` gets
    ``default_rate`` (24000, or the rate hint the client gave at connect).
    ``obj`` is whatever JSON the client sent: any type, any depth."""
    if not isinstance(obj, dict):
        raise FormatError("The audio format must be an object such as "
                          '{"type": "audio/pcm", "rate": 24000}.')
    t = obj.get("type")
    kind = _KINDS.get(t) if isinstance(t, str) else None
    if kind is None:
        raise FormatError(f"Unsupported audio format type {quote(t)}; supported: "
                          "'audio/pcm' (with a rate), 'audio/pcmu', 'audio/pcma'.", "type")
    if kind != "pcm":
        return Fmt(kind, 8000)
    rate = obj.get("rate", default_rate)
    if rate is None:
        rate = default_rate
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in SUPPORTED_PCM_RATES:
        raise FormatError(f"Unsupported PCM sample rate {quote(rate)}; supported rates: "
                          + ", ".join(map(str, SUPPORTED_PCM_RATES)) + ".", "rate")
    return Fmt("pcm", rate)


def parse_rate_hint(value: object) -> int:
    """A client's rate hint (``?input_rate=16000``) -> int; ValueError if the
    gateway cannot resample from/to it.  For the web layer, before upgrade."""
    try:
        rate = int(str(value))
    except ValueError:
        raise ValueError(f"not a sample rate: {value!r}") from None
    if rate not in SUPPORTED_PCM_RATES:
        raise ValueError(f"unsupported sample rate {rate}; supported: "
                         + ", ".join(map(str, SUPPORTED_PCM_RATES)))
    return rate
