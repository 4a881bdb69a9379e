"""Prices, and the cost of a usage record.

Money is counted in integer **nano-dollars** (1e-9 USD) everywhere it is
stored or added up: prices are written in USD per 1M tokens, so a price with
up to three decimals (``0.06``) is a whole number of nano-dollars per token
(60) and sums are exact in SQL on SQLite and PostgreSQL alike.

Usage comes in OpenAI's shape (protocol.md §4): ``input_tokens`` *includes*
the cached tokens, so the uncached part of each class is priced at its full
rate and the cached part at the cached rate -- never both.

A model without a price is never free: it is priced by an explicit fallback
price and the ledger row says so (``fallback``), which reports show.

What the built-in local engine serves is priced by the *channel*, not by
names: a session on a ``local`` channel pays ``openopen8-local``'s price (zero
unless the operator sets one) for every record, whatever model name the
client wrote in its settings (``gpt-4o-mini-transcribe`` for transcription,
say) -- a name the client chose must not turn offline work into a charge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping

NANOS_PER_USD = 10**9
_PER_TOKEN = Decimal(NANOS_PER_USD) / Decimal(10**6)   # (USD per 1M) -> nanos per token
_ZERO = Decimal(0)

#: model names carry dated snapshots: ``gpt-realtime-2025-08-28`` is priced as ``gpt-realtime``
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens per class; ``per_minute`` for duration-billed transcription."""

    text_in: Decimal = _ZERO
    cached_text_in: Decimal = _ZERO
    audio_in: Decimal = _ZERO
    cached_audio_in: Decimal = _ZERO
    image_in: Decimal = _ZERO
    cached_image_in: Decimal = _ZERO
    text_out: Decimal = _ZERO
    audio_out: Decimal = _ZERO
    per_minute: Decimal | None = None
    #: a transcription model priced only by the minute: token usage for it is not priced here
    duration_only: bool = False

    @classmethod
    def of(cls, values: Mapping[str, Any], base: "Price | None" = None) -> "Price":
        """A price from a config mapping, on top of ``base`` (a shipped default).

        Without a base (a model we ship no price for) the four main classes
        are required, so no class is silently free; cached rates default to
        the uncached ones and images to text.
        """
        known = {f.name for f in fields(cls)} - {"duration_only"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown price classes {sorted(unknown)} (known: {sorted(known)})")
        dec = {k: Decimal(str(v)) for k, v in values.items() if v is not None}
        for k, v in dec.items():
            if v < 0:
                raise ValueError(f"price {k} must not be negative")
        if base is not None:
            if set(dec) - {"per_minute"}:
                dec["duration_only"] = False  # type: ignore[assignment]  # token rates given now
            return replace(base, **dec)
        if "per_minute" in dec and set(dec) == {"per_minute"}:
            return cls(per_minute=dec["per_minute"], duration_only=True)
        missing = {"text_in", "audio_in", "text_out", "audio_out"} - set(dec)
        if missing:
            raise ValueError(f"a price for a new model needs {sorted(missing)} too")
        dec.setdefault("cached_text_in", dec["text_in"])
        dec.setdefault("cached_audio_in", dec["audio_in"])
        dec.setdefault("image_in", dec["text_in"])
        dec.setdefault("cached_image_in", dec["image_in"])
        return cls(**dec)


def _p(text_in, cached_text_in, text_out, audio_in, cached_audio_in, audio_out,
       image_in=None, cached_image_in=None) -> Price:
    d = Decimal
    return Price(text_in=d(text_in), cached_text_in=d(cached_text_in), text_out=d(text_out),
                 audio_in=d(audio_in), cached_audio_in=d(cached_audio_in), audio_out=d(audio_out),
                 image_in=d(image_in or text_in), cached_image_in=d(cached_image_in or cached_text_in))


#: the model whose price every record of a local channel (the built-in engine) pays
LOCAL_MODEL = "openopen8-local"

#: Shipped prices, USD per 1M tokens, from OpenAI's model pages
#: (https://developers.openai.com/api/docs/models/<model>, read 2026):
#: text in / cached / out, audio in / cached / out, image in / cached.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-realtime": _p("4.00", "0.40", "16.00", "32.00", "0.40", "64.00", "5.00", "0.50"),
    "gpt-realtime-1.5": _p("4.00", "0.40", "16.00", "32.00", "0.40", "64.00", "5.00", "0.50"),
    "gpt-realtime-2": _p("4.00", "0.40", "24.00", "32.00", "0.40", "64.00", "5.00", "0.50"),
    "gpt-realtime-mini": _p("0.60", "0.06", "2.40", "10.00", "0.30", "20.00", "0.80", "0.08"),
    "gpt-4o-realtime-preview": _p("5.00", "2.50", "20.00", "40.00", "2.50", "80.00"),
    "gpt-4o-mini-realtime-preview": _p("0.60", "0.30", "2.40", "10.00", "0.30", "20.00"),
    # input transcription (billed at the ASR model's rates, protocol.md §4): token-billed
    # models report tokens, whisper-class models report seconds
    "gpt-4o-transcribe": _p("2.50", "2.50", "10.00", "6.00", "6.00", "0"),
    "gpt-4o-mini-transcribe": _p("1.25", "1.25", "5.00", "3.00", "3.00", "0"),
    "whisper-1": Price(per_minute=Decimal("0.006"), duration_only=True),
    "gpt-realtime-whisper": Price(per_minute=Decimal("0.017"), duration_only=True),
    # the built-in local engine costs the operator nothing upstream; an explicit zero price
    # (overridable), so it is never "priced by fallback"
    LOCAL_MODEL: Price(per_minute=_ZERO),   # zero for tokens and for minutes
}

#: What an unknown model costs unless configured: the dearest shipped realtime rates
#: (gpt-4o-realtime-preview), so an unpriced model errs towards stopping early.
DEFAULT_FALLBACK: dict[str, Any] = {
    "text_in": "5.00", "cached_text_in": "2.50", "text_out": "20.00",
    "audio_in": "40.00", "cached_audio_in": "2.50", "audio_out": "80.00",
    "image_in": "5.00", "cached_image_in": "2.50", "per_minute": "0.017",
}


@dataclass(frozen=True)
class Tokens:
    """Token counts of one usage record, as the upstream reports them:
    ``input_*`` include the cached ``cached_*`` of the same class."""

    input_text: int = 0
    input_audio: int = 0
    input_image: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    cached_image: int = 0
    output_text: int = 0
    output_audio: int = 0
    seconds: float = 0.0          # duration-billed transcription

    @property
    def total(self) -> int:
        return (self.input_text + self.input_audio + self.input_image
                + self.output_text + self.output_audio)


def _int(v: Any) -> int:
    return v if isinstance(v, int) and v > 0 else 0


def parse_usage(u: Mapping[str, Any] | None) -> Tokens | None:
    """``response.done.response.usage`` (GA or beta) or a transcription
    ``usage`` (``type: tokens | duration``) as :class:`Tokens`; None when absent."""
    if not isinstance(u, Mapping):
        return None
    if u.get("type") == "duration":
        s = u.get("seconds")
        return Tokens(seconds=float(s) if isinstance(s, (int, float)) and s > 0 else 0.0)
    ind = u.get("input_token_details")
    outd = u.get("output_token_details")
    if isinstance(ind, Mapping):
        it, ia, ii = _int(ind.get("text_tokens")), _int(ind.get("audio_tokens")), _int(ind.get("image_tokens"))
        if not (it or ia or ii):
            it = _int(u.get("input_tokens"))
        cd = ind.get("cached_tokens_details")
        if isinstance(cd, Mapping):
            ct, ca, ci = _int(cd.get("text_tokens")), _int(cd.get("audio_tokens")), _int(cd.get("image_tokens"))
        else:
            # beta: only a total; attribute it to text first, then audio, then images
            rest = _int(ind.get("cached_tokens"))
            ct = min(rest, it)
            ca = min(rest - ct, ia)
            ci = min(rest - ct - ca, ii)
    else:
        it, ia, ii, ct, ca, ci = _int(u.get("input_tokens")), 0, 0, 0, 0, 0
    if isinstance(outd, Mapping):
        ot, oa = _int(outd.get("text_tokens")), _int(outd.get("audio_tokens"))
        if not (ot or oa):
            ot = _int(u.get("output_tokens"))
    else:
        ot, oa = _int(u.get("output_tokens")), 0
    # cached never exceeds its class (a malformed record must not produce a negative charge)
    return Tokens(input_text=it, input_audio=ia, input_image=ii, cached_text=min(ct, it),
                  cached_audio=min(ca, ia), cached_image=min(ci, ii), output_text=ot,
                  output_audio=oa)


def cost_nanos(t: Tokens, p: Price) -> int:
    """The cost of ``t`` at ``p`` in nano-dollars (rounded half up, once)."""
    usd_per_m = (
        (t.input_text - t.cached_text) * p.text_in + t.cached_text * p.cached_text_in
        + (t.input_audio - t.cached_audio) * p.audio_in + t.cached_audio * p.cached_audio_in
        + (t.input_image - t.cached_image) * p.image_in + t.cached_image * p.cached_image_in
        + t.output_text * p.text_out + t.output_audio * p.audio_out
    )
    nanos = usd_per_m * _PER_TOKEN
    if t.seconds:
        nanos += Decimal(str(t.seconds)) * (p.per_minute or _ZERO) * NANOS_PER_USD / 60
    return int(nanos.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def usd(nanos: int) -> Decimal:
    """Nano-dollars as an exact USD amount."""
    return Decimal(nanos).scaleb(-9)


def usd_text(nanos: int) -> str:
    """Nano-dollars as a plain USD figure without trailing zeros: ``0.0106136``."""
    return f"{usd(nanos).normalize():f}"


def nanos_of(amount_usd: float | str | Decimal) -> int:
    return int((Decimal(str(amount_usd)) * NANOS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class PriceTable:
    """Shipped prices plus the operator's overrides (``[prices."model"]``)
    and the fallback for everything else."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 fallback: Mapping[str, Any] | None = None) -> None:
        self.prices: dict[str, Price] = dict(DEFAULT_PRICES)
        for model, values in (overrides or {}).items():
            try:
                self.prices[model] = Price.of(values, self.prices.get(model))
            except (ValueError, ArithmeticError) as exc:
                raise ValueError(f"prices.{model}: {exc}") from None
        try:
            self.fallback = Price.of({**DEFAULT_FALLBACK, **(fallback or {})})
        except (ValueError, ArithmeticError) as exc:
            raise ValueError(f"fallback_price: {exc}") from None

    def lookup(self, model: str | None, *, local: bool = False) -> tuple[Price, bool]:
        """(price, priced_by_fallback) for a model; a dated snapshot
        (``NAME-YYYY-MM-DD``) takes the price of ``NAME``.  ``local``: the
        session runs on the built-in engine, whose price ignores ``model``."""
        if local:
            return self.prices[LOCAL_MODEL], False
        if model:
            p = self.prices.get(model)
            if p is None:
                base = _SNAPSHOT.sub("", model)
                p = self.prices.get(base)
            if p is not None:
                return p, False
        return self.fallback, True

    def cost(self, model: str | None, t: Tokens, *, local: bool = False) -> tuple[int, bool]:
        """(nanos, priced_by_fallback).  A record in units the model has no
        rate for (seconds for a per-token model, tokens for a per-minute one)
        falls back as well, flagged.  ``local``: see :meth:`lookup`."""
        p, fb = self.lookup(model, local=local)
        if (t.seconds and p.per_minute is None) or (t.total and p.duration_only):
            p, fb = self.fallback, True
        return cost_nanos(t, p), fb
