"""Prices and the cost of usage records: exact, cached tokens at the cached
rate (and never twice), unknown models never free."""

from __future__ import annotations

from decimal import Decimal

import pytest

from openopen8.billing import (PriceTable, Tokens, cost_nanos, nanos_of, parse_usage, usd)

#: the live GA capture of protocol.md §4
LIVE = {"total_tokens": 320, "input_tokens": 132, "output_tokens": 188,
        "input_token_details": {"text_tokens": 59, "audio_tokens": 73, "image_tokens": 0,
                                "cached_tokens": 64,
                                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 64,
                                                          "image_tokens": 0}},
        "output_token_details": {"text_tokens": 41, "audio_tokens": 147}}


def test_parse_ga_usage_keeps_every_class():
    t = parse_usage(LIVE)
    assert t == Tokens(input_text=59, input_audio=73, input_image=0, cached_text=0,
                       cached_audio=64, cached_image=0, output_text=41, output_audio=147)
    assert t.total == 320


def test_cached_tokens_are_priced_at_the_cached_rate_and_not_twice():
    prices = PriceTable()
    # gpt-realtime: text 4 / 0.40 / 16, audio 32 / 0.40 / 64 USD per 1M
    cost, fallback = prices.cost("gpt-realtime", parse_usage(LIVE))
    expected = (Decimal(59) * 4 + Decimal(73 - 64) * 32 + Decimal(64) * Decimal("0.40")
                + Decimal(41) * 16 + Decimal(147) * 64) / 10**6
    assert not fallback
    assert usd(cost) == expected == Decimal("0.0106136")
    # the same usage with nothing cached costs more, by exactly the cache discount
    uncached = Tokens(input_text=59, input_audio=73, output_text=41, output_audio=147)
    assert usd(cost_nanos(uncached, prices.lookup("gpt-realtime")[0]) - cost) == \
        Decimal(64) * (32 - Decimal("0.40")) / 10**6


def test_beta_usage_without_cached_details_attributes_cache_to_text_first():
    beta = {"input_tokens": 100, "output_tokens": 10,
            "input_token_details": {"cached_tokens": 70, "text_tokens": 50, "audio_tokens": 50},
            "output_token_details": {"text_tokens": 10, "audio_tokens": 0}}
    t = parse_usage(beta)
    assert (t.cached_text, t.cached_audio) == (50, 20)


def test_malformed_usage_never_gives_a_negative_charge():
    t = parse_usage({"input_token_details": {"text_tokens": 5, "cached_tokens_details":
                                             {"text_tokens": 50}}, "output_tokens": "x"})
    assert t.cached_text == 5 and t.output_text == 0
    assert cost_nanos(t, PriceTable().lookup("gpt-realtime")[0]) >= 0
    assert parse_usage(None) is None and parse_usage("nope") is None


@pytest.mark.parametrize("model,base", [
    ("gpt-realtime-2025-08-28", "gpt-realtime"),
    ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
    ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"),
    ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
])
def test_dated_snapshots_take_their_family_price(model, base):
    prices = PriceTable()
    assert prices.lookup(model) == (prices.lookup(base)[0], False)


def test_unknown_models_are_priced_by_the_fallback_and_flagged():
    prices = PriceTable()
    t = Tokens(input_text=1000, output_audio=1000)
    cost, fallback = prices.cost("some-new-model", t)
    assert fallback and cost > 0
    # a near miss of a snapshot name is not silently taken for the family
    assert prices.lookup("gpt-realtime-turbo")[1]
    cost, fallback = PriceTable(fallback={"text_in": 1, "audio_out": 2}).cost("x", t)
    assert fallback and usd(cost) == Decimal("0.003")


def test_local_engine_has_an_explicit_zero_price_that_can_be_overridden():
    t = Tokens(input_text=500, input_audio=100, output_audio=300, seconds=0)
    assert PriceTable().cost("openopen8-local", t) == (0, False)
    assert PriceTable().cost("openopen8-local", Tokens(seconds=30.0)) == (0, False)
    priced = PriceTable({"openopen8-local": {"audio_out": 1.0}})
    assert priced.cost("openopen8-local", t) == (300 * 1000, False)


def test_overrides_and_new_models():
    prices = PriceTable({"gpt-realtime": {"audio_out": 50},
                         "my-model": {"text_in": 1, "audio_in": 2, "text_out": 3, "audio_out": 4}})
    p = prices.lookup("gpt-realtime-2025-08-28")[0]
    assert p.audio_out == 50 and p.text_in == 4            # the rest stays as shipped
    mine, fb = prices.lookup("my-model")
    assert not fb and mine.cached_audio_in == 2 and mine.image_in == 1   # never cheaper than said
    with pytest.raises(ValueError, match="audio_out"):
        PriceTable({"half-priced": {"text_in": 1, "audio_in": 2, "text_out": 3}})
    with pytest.raises(ValueError, match="unknown price classes"):
        PriceTable({"gpt-realtime": {"audio_outt": 1}})
    with pytest.raises(ValueError, match="negative"):
        PriceTable({"gpt-realtime": {"text_in": -1}})


def test_transcription_by_tokens_and_by_duration():
    prices = PriceTable()
    by_tokens = parse_usage({"type": "tokens", "total_tokens": 24, "input_tokens": 16,
                             "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
                             "output_tokens": 8})
    assert by_tokens == Tokens(input_audio=16, output_text=8)
    cost, fb = prices.cost("gpt-4o-transcribe", by_tokens)       # audio 6.00, text out 10.00
    assert not fb and usd(cost) == Decimal("0.000176")
    by_time = parse_usage({"type": "duration", "seconds": 90})
    cost, fb = prices.cost("whisper-1", by_time)                  # 0.006 per minute
    assert not fb and usd(cost) == Decimal("0.009")
    # seconds for a per-token model, or tokens for a per-minute one: fallback, flagged
    assert prices.cost("gpt-4o-transcribe", by_time)[1]
    assert prices.cost("whisper-1", by_tokens)[1]


def test_money_conversions_are_exact():
    assert nanos_of("12.345678901") == 12_345_678_901
    assert usd(nanos_of(0.1) * 3) == Decimal("0.3")


def test_prices_and_admin_token_come_from_the_toml_file_and_env(tmp_path, monkeypatch):
    from openopen8.settings import load_settings
    cfg = tmp_path / "openopen8.toml"
    cfg.write_text('[prices."gpt-realtime"]\naudio_out = 70.5\n\n'
                   '[prices."my-voice-model"]\ntext_in = 1\naudio_in = 8\ntext_out = 4\naudio_out = 16\n\n'
                   '[fallback_price]\naudio_out = 99\n')
    monkeypatch.setenv("OPENOPEN8_ADMIN_TOKEN", "adm-1")
    s = load_settings(cfg)
    assert s.admin_token.get_secret_value() == "adm-1" and "adm-1" not in repr(s)
    prices = PriceTable(s.prices, s.fallback_price)
    assert prices.lookup("gpt-realtime")[0].audio_out == Decimal("70.5")
    assert prices.lookup("my-voice-model-2026-01-01") == (prices.lookup("my-voice-model")[0], False)
    assert prices.fallback.audio_out == 99 and prices.fallback.text_in == 5
