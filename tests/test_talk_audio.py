"""The talk client's audio: WAV variants in, mono 24 kHz (or G.711) out."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from openopen8.audio.g711 import alaw_encode, ulaw_encode
from openopen8.talk.audio import AudioError, AudioFormat, load_clip, prepare, read_wav, speech_ends
from openopen8.talk.wire import SessionConfig, effective

RATE = 16000
SIG = (0.5 * np.sin(2 * np.pi * 300 * np.arange(1600) / RATE)).astype(np.float32)  # 100 ms


def riff(tag: int, channels: int, bits: int, payload: bytes, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHIH14s", 0xFFFE, channels, RATE, RATE * align, align, bits,
                          22, bits, 0, tag, b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71")
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, RATE, RATE * align, align, bits)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk to skip
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def encodings() -> dict[str, tuple[bytes, float]]:
    """name -> (file bytes, tolerance) for the same 100 ms signal."""
    i16 = np.round(SIG * 32767).astype("<i2")
    i24 = np.round(SIG * 8388607).astype("<i4")
    b24 = np.frombuffer(i24.tobytes(), np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return {
        "pcm8": (riff(1, 1, 8, (np.round(SIG * 127) + 128).astype(np.uint8).tobytes()), 1 / 64),
        "pcm16": (riff(1, 1, 16, i16.tobytes()), 1e-4),
        "pcm24": (riff(1, 1, 24, b24), 1e-6),
        "pcm32": (riff(1, 1, 32, np.round(SIG * 2147483647).astype("<i4").tobytes()), 1e-6),
        "float32": (riff(3, 1, 32, SIG.astype("<f4").tobytes()), 1e-7),
        "float64": (riff(3, 1, 64, SIG.astype("<f8").tobytes()), 1e-7),
        "extensible16": (riff(1, 1, 16, i16.tobytes(), extensible=True), 1e-4),
        "ulaw": (riff(7, 1, 8, ulaw_encode(i16)), 0.02),
        "alaw": (riff(6, 1, 8, alaw_encode(i16)), 0.02),
    }


@pytest.mark.parametrize("name", list(encodings()))
def test_wav_encodings_read_back(name):
    data, tol = encodings()[name]
    clip = read_wav(data)
    assert clip.rate == RATE and clip.channels == 1 and clip.samples.shape[0] == 1600
    assert np.max(np.abs(clip.samples[:, 0] - SIG)) <= tol


def test_stereo_16k_becomes_mono_24k_with_the_tone_kept():
    stereo = np.stack([SIG, SIG * 0.5], axis=1)
    data = riff(1, 2, 16, np.round(stereo * 32767).astype("<i2").tobytes())
    clip = read_wav(data)
    assert clip.channels == 2
    pcm = prepare(clip, AudioFormat())
    out = np.frombuffer(pcm, "<i2")
    assert len(out) == 2400  # 100 ms at 24 kHz
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(np.argmax(spectrum) * 24000 / len(out) - 300) < 15
    assert abs(np.max(np.abs(out)) / 32767 - 0.375) < 0.02  # the mean of 0.5 and 0.25


def test_raw_pcm16_needs_its_rate(tmp_path: Path):
    raw = tmp_path / "in.pcm"
    raw.write_bytes(np.round(SIG * 32767).astype("<i2").tobytes())
    with pytest.raises(AudioError, match="--rate"):
        load_clip(raw)
    clip = load_clip(raw, rate=RATE)
    assert clip.seconds == pytest.approx(0.1)
    g711 = prepare(clip, AudioFormat("pcmu", 8000))
    assert len(g711) == 800  # 100 ms at 8 kHz, a byte a sample


def test_not_a_wav_and_unsupported_encodings_say_so():
    with pytest.raises(AudioError, match="not a RIFF"):
        read_wav(b"hello")
    with pytest.raises(AudioError, match="unsupported WAV encoding"):
        read_wav(riff(2, 1, 4, b"\x00" * 100))  # ADPCM


def test_effective_formats_from_either_dialect():
    asked = SessionConfig()
    ga = {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad",
                                                                        "silence_duration_ms": 200}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    e = effective(ga, "ga", asked)
    assert e.in_fmt == AudioFormat("pcmu", 8000) and e.out_fmt == AudioFormat()
    assert e.vad and e.silence_ms == 200
    assert e.transcribing  # not said: as asked
    ga["audio"]["input"]["transcription"] = None
    assert not effective(ga, "ga", asked).transcribing  # the server will not transcribe
    beta = {"input_audio_format": "g711_alaw", "output_audio_format": "pcm16", "turn_detection": None}
    e = effective(beta, "beta", asked)
    assert e.in_fmt == AudioFormat("pcma", 8000) and e.out_fmt.rate == 24000 and not e.vad
    e = effective({"input_audio_format": "pcm16", "input_audio_sample_rate": 16000}, "beta", asked)
    assert e.in_fmt == AudioFormat("pcm16", 16000)  # openopen8's beta rate extension
    beta16 = SessionConfig(dialect="beta", fmt=AudioFormat("pcm16", 16000)).session_update()["session"]
    assert beta16["input_audio_sample_rate"] == beta16["output_audio_sample_rate"] == 16000
    assert "input_audio_sample_rate" not in SessionConfig(dialect="beta").session_update()["session"]
    e = effective({}, "beta", SessionConfig(vad=False))  # nothing said: what was asked
    assert e.in_fmt == AudioFormat() and not e.vad


def test_player_counts_what_was_heard_and_stops_on_barge_in():
    from openopen8.talk.mic import Player

    p = Player()
    p.feed("a1", np.full(300, 7, np.int16))
    p.feed("a2", np.full(500, 9, np.int16))
    block = np.empty(480, np.int16)
    p.fill(block)  # 300 of a1, then 180 of a2
    assert block[:300].tolist() == [7] * 300 and block[300:].tolist() == [9] * 180
    assert p.played == {"a1": 300, "a2": 180}
    assert p.stop() == ("a2", 180, True)  # a2 was cut after 180 samples
    p.fill(block)
    assert not block.any()  # silence after the stop
    assert p.stop()[2] is False  # nothing left to cut


def _speech(*parts: tuple[str, int], noise_dbfs: float | None = None, rate: int = 24000) -> np.ndarray:
    """("tone"|"quiet", ms) parts as int16, over steady noise at ``noise_dbfs``."""
    rng = np.random.default_rng(7)
    x = np.concatenate([0.3 * np.sin(2 * np.pi * 220 * np.arange(rate * ms // 1000) / rate)
                        if kind == "tone" else np.zeros(rate * ms // 1000) for kind, ms in parts])
    if noise_dbfs is not None:
        x = x + rng.normal(0, 10 ** (noise_dbfs / 20), x.size)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("noise", [None, -70.0, -45.0])
def test_speech_ends_at_the_last_frame_above_the_noise_floor(noise):
    # 300 ms quiet, 500 ms speech, 600 ms quiet, 400 ms speech, 300 ms quiet: 20 ms frames
    x = _speech(("quiet", 300), ("tone", 500), ("quiet", 600), ("tone", 400), ("quiet", 300),
                noise_dbfs=noise)
    assert speech_ends(x, 24000, 20, gap_ms=500) == [39, 89]      # frames ending at 800, 1800 ms
    # a pause shorter than the VAD's silence window does not end the speech
    assert speech_ends(x, 24000, 20, gap_ms=700) == [89]


def test_speech_ends_in_a_quiet_or_empty_clip_are_none_and_all_speech_ends_at_the_end():
    assert speech_ends(_speech(("quiet", 500), noise_dbfs=-60.0), 24000) == []
    assert speech_ends(np.zeros(0, np.int16), 24000) == []
    assert speech_ends(_speech(("tone", 1000), rate=8000), 8000) == [49]
