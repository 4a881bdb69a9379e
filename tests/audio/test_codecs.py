"""pcm16 / G.711 / resampling helpers."""

import numpy as np
import pytest

from openopen8.audio import g711
from openopen8.audio.convert import StreamConverter, convert_once, decode, encode
from openopen8.audio.formats import PCM24, PCMA, PCMU, Fmt, FormatError, parse_ga_format, parse_rate_hint
from openopen8.audio.resample import StreamResampler


def tone(freq: float, rate: int, seconds: float, amp: float = 12000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_alaw_round_trip_every_code():
    codes = bytes(range(256))
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def test_ulaw_round_trip_every_code_but_negative_zero():
    codes = bytes(range(256))
    back = g711.ulaw_encode(g711.ulaw_decode(codes))
    # 0x7F is μ-law's "negative zero": it decodes to 0, which encodes as 0xFF
    assert [i for i in range(256) if back[i] != codes[i]] == [0x7F]


@pytest.mark.parametrize("enc,dec", [(g711.alaw_encode, g711.alaw_decode),
                                     (g711.ulaw_encode, g711.ulaw_decode)])
def test_g711_pcm_round_trip_error_is_within_quantisation(enc, dec):
    x = tone(440, 8000, 0.2)
    y = dec(enc(x)).astype(np.int32)
    err = np.abs(y - x.astype(np.int32))
    # companding: error grows with amplitude, < 1/16 of the value (+ small floor)
    assert np.all(err <= np.abs(x.astype(np.int32)) / 16 + 16)


def test_g711_matches_audioop_when_available():
    audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    x = np.arange(-32768, 32768, dtype=np.int16)
    assert g711.ulaw_encode(x) == audioop.lin2ulaw(x.tobytes(), 2)
    assert g711.alaw_encode(x) == audioop.lin2alaw(x.tobytes(), 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize("src,dst", [(16000, 24000), (8000, 24000), (24000, 8000),
                                     (44100, 24000), (48000, 24000), (22050, 24000),
                                     (24000, 16000)])
def test_stream_resampler_keeps_length_and_frequency_over_chunks(src, dst):
    x = tone(440, src, 1.0)
    rs = StreamResampler(src, dst)
    step = src // 50 + 7           # odd-sized chunks, not aligned to anything
    parts = [rs.process(x[i:i + step]) for i in range(0, len(x), step)]
    parts.append(rs.flush())
    y = np.concatenate(parts)
    assert len(y) == len(x) * dst // src
    assert abs(peak_hz(y, dst) - 440) < 2
    # continuity: no clicks at chunk borders (a sine's sample step is bounded)
    assert np.max(np.abs(np.diff(y[dst // 10: -dst // 10].astype(np.int32)))) < 12000 * 2 * np.pi * 440 / dst * 1.2


def test_stream_resampler_flush_resets_for_a_fresh_stream():
    rs = StreamResampler(16000, 24000)
    x = tone(300, 16000, 0.5)
    a = np.concatenate([rs.process(x), rs.flush()])
    b = np.concatenate([rs.process(x), rs.flush()])
    assert np.array_equal(a, b)
    assert len(rs.flush()) == 0      # nothing pending: flushing again is free


def test_converter_carries_an_odd_byte_across_chunks():
    x = tone(500, 24000, 0.1)
    raw = x.tobytes()
    whole = StreamConverter(PCM24, PCMU)
    expected = whole.process(raw) + whole.flush()
    conv = StreamConverter(PCM24, PCMU)
    out = b"".join(conv.process(raw[i:i + 101]) for i in range(0, len(raw), 101)) + conv.flush()
    assert out == expected
    assert len(out) == len(x) // 3


def test_converter_ulaw_8k_to_pcm_24k():
    x = tone(440, 8000, 1.0)
    ulaw = g711.ulaw_encode(x)
    conv = StreamConverter(PCMU, PCM24)
    out = b"".join(conv.process(ulaw[i:i + 160]) for i in range(0, len(ulaw), 160)) + conv.flush()
    assert len(out) == len(ulaw) * 3 * 2
    assert abs(peak_hz(decode(out, "pcm"), 24000) - 440) < 2


def test_convert_once():
    x = tone(440, 16000, 0.5)
    out = convert_once(x.tobytes(), Fmt("pcm", 16000), PCM24)
    assert len(out) == len(x) * 3
    assert abs(peak_hz(decode(out, "pcm"), 24000) - 440) < 2
    assert convert_once(b"abc", PCMA, PCMA) == b"abc"
    assert encode(decode(b"\x01\x02", "pcm"), "pcm") == b"\x01\x02"


def test_parse_ga_format():
    assert parse_ga_format({"type": "audio/pcm", "rate": 24000}) == PCM24
    assert parse_ga_format({"type": "audio/pcm"}, 16000) == Fmt("pcm", 16000)
    assert parse_ga_format({"type": "audio/pcmu"}) == PCMU
    assert parse_ga_format({"type": "audio/pcma", "rate": 123}) == PCMA
    with pytest.raises(FormatError) as e:
        parse_ga_format({"type": "audio/pcm", "rate": 11111})
    assert e.value.subfield == "rate"
    with pytest.raises(FormatError) as e:
        parse_ga_format({"type": "audio/opus"})
    assert e.value.subfield == "type"
    with pytest.raises(FormatError):
        parse_ga_format("pcm16")


def test_parse_rate_hint():
    assert parse_rate_hint("16000") == 16000
    for bad in ("abc", "12345", ""):
        with pytest.raises(ValueError):
            parse_rate_hint(bad)
