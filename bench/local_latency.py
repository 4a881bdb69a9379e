"""The local engine as a user hears it: a voice benchmark on the real models.

Spoken turns are synthesized at run time (by default espeak-ng en-us at 160
wpm and en-gb at 140 wpm, robotic, and Piper's natural joe voice at its own
pace; ``--voices`` chooses), then streamed into
engine sessions at real-time pace in 20 ms appends, followed by silence for
as long as the engine takes (a microphone keeps sending), while a reader
timestamps the server events.  Sections (``--sections``, all by default):

* ``turns``: 20 factual questions per voice -- end of speech → first reply
  audio (median, p90; the true end of speech in the audio, not
  ``speech_stopped``), input transcription WER, replies containing the key
  word, reply audio length, replies cut by the token cap, replies with
  something a voice should not say (URLs, markdown, list markers);
* ``context``: three 6-turn conversations that start "My name is X." and end
  "What is my name?"; a recall counts when the last reply says X;
* ``eot``: semantic turn-taking only -- an unfinished sentence followed by a
  pause must not end the turn (false ends counted);
* ``concurrency``: N sessions whose questions end at the same moment, for
  each N of ``--sessions`` (median / p90 first audio);
* ``bargein``: speech during a reply → ``speech_started`` → cancelled
  ``response.done``;
* ``intelligibility``: the reply audio transcribed back (whisper base) against
  its transcript;
* ``stt`` (not by default): speech-to-text alone on every sentence of the
  benchmark in every voice -- the engine's short window with its loop check,
  the same without the check, and the standard 30 s window (WER per voice,
  median time).

Every figure is printed with the machine's load average: 2 cores are
shared, so compare configurations within one run.

Run:  PYTHONPATH=. python bench/local_latency.py [--stt whisper-base]
        [--td server_vad:400,semantic_vad:auto]
        [--sections turns,context,concurrency,bargein,intelligibility]
        [--voices en-us:160,en-gb:140,piper:1.0] [--sessions 1,2,3,4] [--quick]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openopen8.engine.config import EngineConfig  # noqa: E402
from openopen8.engine.runtime import get_engine  # noqa: E402
from openopen8.events import Event  # noqa: E402

#: (question, key words: a reply containing any of them is right)
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is two plus two?", ("four", "4")),
    ("How many days are there in a week?", ("seven", "7")),
    ("What is the opposite of hot?", ("cold",)),
    ("Which animal says moo?", ("cow",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What do bees make?", ("honey",)),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("What do you call frozen water?", ("ice",)),
    ("Which planet do we live on?", ("earth",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What color is a ripe banana?", ("yellow",)),
    ("How many months are in a year?", ("twelve", "12")),
    ("What language do people speak in Spain?", ("spanish",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("At what temperature does water boil in Celsius?", ("100", "hundred")),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the tallest animal in the world?", ("giraffe",)),
]
#: everyday requests that invite lists, links and long answers (form only)
OPEN_REQUESTS = [
    "Can you recommend a good website for the news?",
    "How do I make pancakes?",
    "Tell me about the internet.",
    "Please give me a tip for sleeping better.",
]
CONVERSATIONS = [
    ("Sam", ["My name is Sam.", "What is the capital of France?",
             "How many legs does a spider have?", "What color is the sky?",
             "Can you name a fruit?", "What is my name?"]),
    ("Maria", ["Hi, I am Maria.", "What is two plus two?", "Which animal says moo?",
               "What do bees make?", "What is the opposite of hot?", "Do you remember my name?"]),
    ("David", ["Hello, my name is David.", "What is the capital of Japan?",
               "How many days are in a week?", "What do you call frozen water?",
               "Which planet do we live on?", "What is my name?"]),
]
#: unfinished sentences: the speaker pauses mid-thought, then goes on
UNFINISHED = [
    ("What is the capital of", "France?"),
    ("How many legs does a", "spider have?"),
    ("I would like to know", "what color the sky is."),
    ("Can you tell me the", "time in Tokyo?"),
    ("My favourite fruit is the", "banana."),
    ("What is the largest", "planet?"),
]
BARGE = "Wait, stop please."
STORIES = ["Tell me a long story about a brave dragon.", "Tell me a story about a lost cat.",
           "Explain in detail how rain forms.", "Tell me a long story about the sea."]
LEAD_MS = 300
CHUNK_MS = 20
MID_PAUSE_MS = 700
_URL = re.compile(r"https?://|www\.|\.(com|org|net|io)\b", re.I)
_FORM = re.compile(r"[*#`_]|^\s*(\d+[.)]|[-•])\s", re.M)


# ------------------------------------------------------------------ helpers

def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


_NUM = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
        "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten", "12": "twelve",
        "24": "twenty four", "100": "one hundred"}


#: contractions said out (as Whisper's English normalizer does): "I'm Maria"
#: is a right hearing of "I am Maria"
_CONTRACTIONS = {"i'm": "i am", "it's": "it is", "what's": "what is", "that's": "that is",
                 "you're": "you are", "we're": "we are", "they're": "they are",
                 "don't": "do not", "doesn't": "does not", "isn't": "is not",
                 "aren't": "are not", "can't": "can not", "won't": "will not",
                 "i'll": "i will", "i've": "i have", "let's": "let us"}


def words(text: str) -> list[str]:
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"[a-z]+'[a-z]+", lambda m: _CONTRACTIONS.get(m.group(0), m.group(0)), t)
    t = t.replace("-", " ").replace("'", "")
    t = re.sub(r"[^a-z0-9 ]", " ", t)
    out: list[str] = []
    for w in t.split():
        out += _NUM.get(w, w).split()
    return out


def wer_counts(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference words)."""
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)


def recalls(name: str, reply: str) -> bool:
    """The reply gives the user their name (not "My name is Sam.": SmolLM2
    taking the user's name for its own is not remembering it)."""
    low = reply.lower()
    own = re.search(r"\b(my name is|i am|i'm|call me) " + re.escape(name.lower()), low)
    return name.lower() in low and not own


def has_key(reply: str, keys: tuple[str, ...]) -> bool:
    low = " " + reply.lower().replace("-", " ") + " "
    return any(re.search(r"\b" + re.escape(k.replace("-", " ")) + r"\b", low) for k in keys)


class Voices:
    """espeak-ng voices at a rate (``en-us:160``) and Piper (``piper:1.0`` =
    length scale), all 24 kHz int16."""

    def __init__(self, engine) -> None:
        from openopen8.engine.backends.tts import EspeakTts
        self.espeak = EspeakTts()
        self.espeak.load()
        self.piper = engine.backends.tts if engine.cfg.tts == "piper" else None
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def say(self, voice: str, text: str) -> np.ndarray:
        key = (voice, text)
        if key not in self._cache:
            name, _, arg = voice.partition(":")
            if name == "piper" and self.piper is not None:
                from piper.config import SynthesisConfig
                p = self.piper
                old = p.syn
                p.syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0,
                                        length_scale=float(arg or 1.0))
                try:
                    pcm = p._run(text)
                finally:
                    p.syn = old
            else:
                lib = self.espeak._lib
                lib.espeak_SetVoiceByName(name.encode())
                lib.espeak_SetParameter(1, int(arg or 160), 0)
                pcm = self.espeak._run(text)
            self._cache[key] = pcm.astype(np.int16)
        return self._cache[key]


def pcm_bytes(*parts: np.ndarray | int) -> bytes:
    """Clips and silences (ints: milliseconds) joined, 24 kHz pcm16 bytes."""
    out = []
    for p in parts:
        out.append(np.zeros(24 * p, dtype=np.int16) if isinstance(p, int) else p)
    return np.concatenate(out).astype("<i2").tobytes()


class Talker:
    """One session: streams audio in real time, then silence until told to stop."""

    def __init__(self, ep) -> None:
        self.ep = ep
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            ev = await self.ep.recv()
            if ev is None:
                return
            d = ev.data
            self.events.append((time.monotonic(), d))

    async def send(self, d: dict[str, Any]) -> None:
        await self.ep.send(Event.from_data(d))

    async def stream(self, audio: bytes, t0: float | None = None) -> float:
        """Append ``audio`` at real-time pace from ``t0``; returns ``t0``."""
        step = 48 * CHUNK_MS
        t0 = time.monotonic() if t0 is None else t0
        for i, off in enumerate(range(0, len(audio), step)):
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(audio[off:off + step]).decode()})
            delay = t0 + (i + 1) * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return t0

    async def silence_until_reply(self, after: float, cap_s: float = 20.0) -> None:
        """A live microphone: silence until a response that was not cancelled
        is done after ``after`` (or the cap).  An utterance the engine took as
        two turns ("Hi," and a pause) has its first reply cancelled by the
        rest of the speech: the reply to the whole of it is the one awaited."""
        t0 = time.monotonic()
        i = 0
        chunk = base64.b64encode(bytes(48 * CHUNK_MS)).decode()
        while self.reply_after(after) is None and time.monotonic() - t0 < cap_s:
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})
            i += 1
            delay = t0 + i * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def reply_after(self, after: float) -> dict[str, Any] | None:
        """The last ``response.done`` after ``after`` that was not cancelled."""
        return next((d for ts, d in reversed(self.events) if ts >= after
                     and d["type"] == "response.done"
                     and d["response"]["status"] != "cancelled"), None)

    def first(self, type_: str, after: float = 0.0) -> tuple[float, dict[str, Any]] | None:
        return next(((t, d) for t, d in self.events if d["type"] == type_ and t >= after), None)

    def all(self, type_: str) -> list[dict[str, Any]]:
        return [d for _, d in self.events if d["type"] == type_]

    async def close(self) -> None:
        await self.ep.close()
        self._reader.cancel()


async def open_talker(engine, td: dict[str, Any]) -> Talker:
    ep = await engine.open_session("", "openopen8-local")
    t = Talker(ep)
    await t.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"transcription": {"model": "whisper-1"}, "turn_detection": td}}}})
    return t


async def spoken_turn(t: Talker, clip: np.ndarray,
                      t0: float | None = None) -> dict[str, Any]:
    """Speak ``clip``; wait for the reply to it (the response done after the
    speech that was not cancelled).  Times are from the true end of speech
    (end of the clip, minus the 20 ms of silence the synthesizer's trim
    keeps), to that reply's first audio."""
    start_ev = len(t.events)
    t0 = await t.stream(pcm_bytes(LEAD_MS, clip), t0)
    t_eos = t0 + (LEAD_MS + clip.size / 24 - 20) / 1000
    await t.silence_until_reply(t_eos)
    evs = t.events[start_ev:]
    done = t.reply_after(t_eos)
    rid = done["response"]["id"] if done is not None else None
    first_audio = next((ts for ts, d in evs if d["type"] == "response.output_audio.delta"
                        and d.get("response_id") == rid), None)
    stopped = next((ts for ts, d in reversed(evs) if d["type"] ==
                    "input_audio_buffer.speech_stopped"
                    and (first_audio is None or ts <= first_audio)), None)
    heard = " ".join(d["transcript"] for _, d in evs if d["type"] ==
                     "conversation.item.input_audio_transcription.completed")
    reply, audio_s, status = "", 0.0, None
    if done is not None:
        r = done["response"]
        status = r["status"]
        for item in r["output"]:
            for c in item.get("content") or []:
                reply += c.get("transcript") or c.get("text") or ""
    audio_s = sum(len(base64.b64decode(d["delta"])) for _, d in evs
                  if d["type"] == "response.output_audio.delta"
                  and d.get("response_id") == rid) / 48000
    hints = list(getattr(t.ep.session, "turn_hints", []))
    tm = t.ep.session.finished[-1].timings if t.ep.session.finished else {}
    parts = {}
    if first_audio and stopped:
        parts["stop_to_audio"] = first_audio - stopped
    if "llm_first" in tm and "pipeline_start" in tm:
        parts["llm_first"] = tm["llm_first"] - tm["pipeline_start"]
    if "tts_first" in tm and "llm_first" in tm:
        parts["tts_first"] = tm["tts_first"] - tm["llm_first"]
    if "pipeline_start" in tm and "speech_stopped" in tm:
        parts["head_start"] = tm["speech_stopped"] - tm["pipeline_start"]
    return {**parts, "eos_to_audio": first_audio - t_eos if first_audio else None,
            "hints": hints,
            "eos_to_stopped": stopped - t_eos if stopped else None,
            "heard": heard, "reply": reply, "status": status, "audio_s": audio_s,
            "n_stops": sum(1 for _, d in evs if d["type"] ==
                           "input_audio_buffer.speech_stopped")}


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def line(label: str, xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return f"{label:44s} (none)"
    return (f"{label:44s} median {statistics.median(xs):.2f} s  p90 {pct(xs, 0.9):.2f} s"
            f"  (n={len(xs)})")


# ----------------------------------------------------------------- sections

async def section_turns(voices: Voices, names: list[str], tds, qs, report) -> None:
    """Every question in every voice under each turn detection, interleaved
    (so a change in the machine's load hits every configuration alike)."""
    rows = []
    plan = [(v, q, keys) for v in names for q, keys in qs]
    plan += [(names[0], q, None) for q in OPEN_REQUESTS]
    for v, q, keys in plan:
        for label, td, eng in tds:
            t = await open_talker(eng, td)
            r = await spoken_turn(t, voices.say(v, q))
            await t.close()
            r.update(voice=v, q=q, key=has_key(r["reply"], keys) if keys else None, td=label)
            rows.append(r)
    report["turns"] = rows
    for label, *_ in tds:
        print_turns(label, [r for r in rows if r["td"] == label], names)


def print_turns(label: str, rows: list[dict[str, Any]], names: list[str]) -> None:
    factual = [r for r in rows if r["key"] is not None]
    print(f"-- turns, {label} ({load()}): {len(factual)} factual + "
          f"{len(rows) - len(factual)} open requests")
    print(line("end of speech → first audio", [r["eos_to_audio"] for r in rows]))
    print(line("end of speech → speech_stopped", [r["eos_to_stopped"] for r in rows]))
    print(line("speech_stopped → first audio", [r.get("stop_to_audio") for r in rows]))
    print(line("  reply work started before speech_stopped", [r.get("head_start") for r in rows]))
    print(line("  LLM first token (from its start)", [r.get("llm_first") for r in rows]))
    print(line("  first clause + TTS (after 1st token)", [r.get("tts_first") for r in rows]))
    for v in names:
        e = n = 0
        for r in factual:
            if r["voice"] == v:
                de, dn = wer_counts(r["q"], r["heard"])
                e, n = e + de, n + dn
        print(f"input WER {v:12s} {e / max(n, 1):6.1%}")
    e = n = 0
    for r in factual:
        de, dn = wer_counts(r["q"], r["heard"])
        e, n = e + de, n + dn
    exact = [r for r in factual if wer_counts(r["q"], r["heard"])[0] == 0]
    print(f"input WER all          {e / max(n, 1):6.1%}")
    print(f"key word in reply      {sum(r['key'] for r in factual)}/{len(factual)}"
          f"  ({sum(r['key'] for r in exact)}/{len(exact)} when heard exactly)")
    print(line("reply audio length", [r["audio_s"] for r in rows]))
    print(f"status incomplete      {sum(r['status'] == 'incomplete' for r in rows)}/{len(rows)}")
    bad = [r for r in rows if _URL.search(r["reply"]) or _FORM.search(r["reply"])]
    print(f"URL/markdown/list      {len(bad)}/{len(rows)}")
    cut = [r for r in rows if r["reply"].strip() and r["reply"].strip()[-1] not in ".!?\"'"]
    print(f"reply not ending a sentence {len(cut)}/{len(rows)}")
    for r in rows[:: max(1, len(rows) // 8)]:
        print(f"   [{r['voice']}] heard {r['heard']!r} → {r['reply'][:110]!r}")
    hints = [h for r in rows for h in r.get("hints", [])]
    if hints:
        waits = [h[1] for h in hints]
        print(f"semantic judgements: {len(hints)}; waits {sorted(set(waits))}: "
              f"{[waits.count(w) for w in sorted(set(waits))]}")


async def section_context(engine, voices: Voices, voice: str, td, report) -> None:
    hits = 0
    out = []
    for name, script in CONVERSATIONS:
        t = await open_talker(engine, td)
        replies, lat = [], []
        for i, text in enumerate(script):
            r = await spoken_turn(t, voices.say(voice, text))
            replies.append(r["reply"])
            lat.append(r["eos_to_audio"])
            await asyncio.sleep(0.3)
        await t.close()
        ok = recalls(name, replies[-1])
        hits += ok
        out.append({"name": name, "replies": replies, "latency": lat, "recalled": ok})
        print(f"   {name}: turn 1 {replies[0][:70]!r} ... last {replies[-1][:70]!r} "
              f"latency by turn {[round(x, 2) if x else None for x in lat]}")
    report["context"] = out
    print(f"-- context ({load()}): recalled the name {hits}/{len(CONVERSATIONS)}")


async def section_eot(engine, voices: Voices, voice: str, td, report) -> None:
    false_ends, lat = 0, []
    for head, tail in UNFINISHED:
        t = await open_talker(engine, td)
        first = voices.say(voice, head)
        await t.stream(pcm_bytes(LEAD_MS, first, MID_PAUSE_MS, voices.say(voice, tail), 2500))
        resume_ms = LEAD_MS + first.size / 24 + MID_PAUSE_MS
        stops = [d["audio_end_ms"] for d in t.all("input_audio_buffer.speech_stopped")]
        false_ends += any(ms < resume_ms for ms in stops)
        lat += [max(stops) - resume_ms] if stops else []
        hints = getattr(t.ep.session, "turn_hints", [])
        print(f"   {head!r} … {tail!r}: stops at {stops} (resumed at {resume_ms:.0f}); "
              f"judged {[(round(h[0], 3), h[1], h[2]) for h in hints]}")
        await t.close()
    report["eot_false_ends"] = false_ends
    print(f"-- unfinished sentences with a {MID_PAUSE_MS} ms pause ({load()}): "
          f"turn ended mid-sentence {false_ends}/{len(UNFINISHED)}")
    report["eot"] = {"false_ends": false_ends}


async def section_concurrency(variants, voices: Voices, voice: str, td, counts, qs,
                              report) -> None:
    """N sessions whose questions end at the same moment; rounds alternate
    between the engine variants (``--ab``)."""
    out: dict[str, dict[int, list[float]]] = {}
    for n in counts:
        for rnd in range(max(2, 8 // n)):
            for vl, engine in variants:
                talkers = [await open_talker(engine, td) for _ in range(n)]
                clips = [voices.say(voice, qs[(rnd * n + k) % len(qs)][0]) for k in range(n)]
                longest = max(c.size for c in clips)
                t0 = time.monotonic() + 0.05
                # pad in front so that every question ends at the same moment
                rs = await asyncio.gather(*(
                    spoken_turn(tk, np.concatenate([np.zeros(longest - c.size, np.int16), c]),
                                t0) for tk, c in zip(talkers, clips)))
                for tk in talkers:
                    await tk.close()
                out.setdefault(vl or "base", {}).setdefault(n, []).extend(
                    r["eos_to_audio"] for r in rs if r["eos_to_audio"] is not None)
        for vl in out:
            print(line(f"{n} concurrent {vl}: end of speech → first audio ({load()})",
                       out[vl][n]))
    report["concurrency"] = out


async def section_bargein(engine, voices: Voices, voice: str, td, qs, report) -> None:
    to_start, to_done = [], []
    # a request with a long answer, so the reply is still being made when
    # the user talks over it (a short one is done before it is half heard,
    # and then a client truncates it itself)
    for q in STORIES:
        t = await open_talker(engine, td)
        t0 = await t.stream(pcm_bytes(LEAD_MS, voices.say(voice, q)))
        while not t.first("response.output_audio.delta"):
            await t.stream(pcm_bytes(CHUNK_MS))
            if time.monotonic() - t0 > 15:
                break
        await t.stream(pcm_bytes(400))
        barge = voices.say(voice, BARGE)
        t_speak = time.monotonic()
        await t.stream(pcm_bytes(barge, 600))
        st = t.first("input_audio_buffer.speech_started", t_speak)
        dn = next(((ts, d) for ts, d in t.events if ts >= t_speak
                   and d["type"] == "response.done"
                   and d["response"]["status"] == "cancelled"), None)
        if st:
            to_start.append(st[0] - t_speak)
        if dn:
            to_done.append(dn[0] - t_speak)
        await t.close()
    report["bargein"] = {"speech_started": to_start, "cancelled": to_done}
    print(f"-- barge-in ({load()})")
    print(line("speech → speech_started", to_start))
    print(line("speech → cancelled response.done", to_done))


async def section_intelligibility(engine, report) -> None:
    from openopen8.engine.backends.stt import WhisperStt
    from openopen8.engine.codec import resample
    base = WhisperStt("base", engine.cfg.cache_dir, 2)
    base.load()
    e = n = 0
    replies = [r["reply"] for r in report.get("turns", [])]
    for sub in report.values():          # or the conversations' replies
        if isinstance(sub, dict):
            replies += [x for c in sub.get("context", []) for x in c["replies"]]
    for reply in [x for x in replies if x.strip()][:20]:
        r = {"reply": reply}
        pcm = await engine.backends.tts.synthesize(r["reply"])
        tr = await base.transcribe(resample(pcm, 24000, 16000))
        de, dn = wer_counts(r["reply"], tr.text)
        e, n = e + de, n + dn
    report["reply_wer"] = e / max(n, 1)
    print(f"-- reply audio intelligibility (whisper base on the TTS output): "
          f"WER {e / max(n, 1):.1%} over {n} words")


async def section_stt(engine, voices: Voices, names: list[str], report) -> None:
    import soxr

    from openopen8.engine.backends import stt as sttmod
    stt = engine.backends.stt
    texts = ([q for q, _ in QUESTIONS] + OPEN_REQUESTS
             + [x for _, script in CONVERSATIONS for x in script])
    clips = [(v, x, soxr.resample(voices.say(v, x), 24000, 16000).astype(np.int16))
             for v in names for x in texts]
    def exact(text: str) -> bool:       # the check before: a sentence said twice in a row
        parts = [x.strip().lower() for x in sttmod._SENT.findall(text) if x.strip()]
        return any(a == b for a, b in zip(parts, parts[1:]))

    variants = [("short window + loop check (default)", True, sttmod._repeats),
                ("short window, exact repeats only", True, exact),
                ("standard 30 s window", False, sttmod._repeats)]
    out: dict[str, Any] = {}
    keep = (stt.short_window, sttmod._repeats)
    print(f"-- speech-to-text alone, {stt.name}, {len(clips)} utterances ({load()})")
    try:
        for label, short, check in variants:
            stt.short_window, sttmod._repeats = short, check
            per: dict[str, list[int]] = {}
            times = []
            for v, ref, pcm in clips:
                tr = stt._run(pcm)
                times.append(tr.elapsed)
                e, n = wer_counts(ref, tr.text)
                per.setdefault(v, [0, 0])
                per[v][0] += e
                per[v][1] += n
            tot = [sum(x[0] for x in per.values()), sum(x[1] for x in per.values())]
            out[label] = {"wer": {v: e / n for v, (e, n) in per.items()},
                          "wer_all": tot[0] / tot[1], "median_s": statistics.median(times)}
            print(f"{label:38} WER {tot[0] / tot[1]:.1%} ("
                  + ", ".join(f"{v} {e / n:.1%}" for v, (e, n) in per.items())
                  + f"), median {statistics.median(times) * 1000:.0f} ms")
    finally:
        stt.short_window, sttmod._repeats = keep
    report["stt"] = out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stt", default=EngineConfig().stt)
    ap.add_argument("--td", default=f"server_vad:{EngineConfig().silence_duration_ms}",
                    help="turn detections, comma-separated: server_vad:<silence ms> or "
                         "semantic_vad:<eagerness>; turns are interleaved between them, the "
                         "other sections run once per turn detection")
    ap.add_argument("--voices", default="en-us:160,en-gb:140,piper:1.0")
    ap.add_argument("--sections", default="turns,context,eot,concurrency,bargein,"
                                          "intelligibility")
    ap.add_argument("--sessions", default="1,2,3,4,5,6")
    ap.add_argument("--quick", action="store_true", help="8 questions per voice")
    ap.add_argument("--no-speculation", action="store_true")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--set", action="append", default=[],
                    help="engine setting key=value (json value), repeatable")
    ap.add_argument("--ab", action="append", default=[],
                    help="a variant: engine settings k=v[;k=v] that do not change the models "
                         "(e.g. first_clause_words=0); turns interleave with the base")
    args = ap.parse_args()
    extra = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    cfg = EngineConfig.from_mapping({"stt": args.stt, **extra, **(
        {"speculative_stt_ms": 0} if args.no_speculation else {})})
    tds: list[tuple[str, dict[str, Any]]] = []
    for spec in args.td.split(","):
        kind, _, arg = spec.partition(":")
        tds.append((spec, {"type": "semantic_vad", "eagerness": arg or "auto"}
                    if kind == "semantic_vad" else
                    {"type": "server_vad", "silence_duration_ms": int(arg or 400)}))
    engine = get_engine(cfg)
    t = time.perf_counter()
    engine.load_sync()
    print(f"local engine voice benchmark: stt={cfg.stt} llm={cfg.llm} tts={cfg.tts} "
          f"vad={cfg.vad} turn detection {args.td} {extra or ''}")
    print(f"cold load {time.perf_counter() - t:.1f} s; {os.cpu_count()} cores; {load()}; "
          f"uptime: {os.popen('uptime').read().strip()}")
    voices = Voices(engine)
    names = args.voices.split(",")
    qs = QUESTIONS[:8] if args.quick else QUESTIONS
    report: dict[str, Any] = {"config": {"stt": cfg.stt, "td": args.td, "extra": extra}}
    sections = args.sections.split(",")
    t_all = time.perf_counter()
    variants = [("", engine)]
    for ab in args.ab:
        kv = dict(x.split("=", 1) for x in ab.split(";"))
        variants.append((ab, get_engine(EngineConfig.from_mapping(
            {"stt": args.stt, **extra, **{k: json.loads(v) for k, v in kv.items()}}))))
        variants[-1][1].load_sync()
    if "turns" in sections:
        await section_turns(voices, names, [(f"{lab} {vl}".strip(), td, eng) for lab, td in tds
                                            for vl, eng in variants], qs, report)
    for label, td in tds:
        sub: dict[str, Any] = report.setdefault(label, {})
        if len(tds) > 1:
            print(f"== {label}")
        if "context" in sections:
            await section_context(engine, voices, names[0], td, sub)
        if "eot" in sections:
            await section_eot(engine, voices, names[0], td, sub)
        if "concurrency" in sections:
            await section_concurrency(variants, voices, names[0], td,
                                      [int(x) for x in args.sessions.split(",")], qs, sub)
        if "bargein" in sections:
            await section_bargein(engine, voices, names[0], td, qs, sub)
    if "intelligibility" in sections:
        await section_intelligibility(engine, report)
    if "stt" in sections:
        await section_stt(engine, voices, names, report)
    print(f"({time.perf_counter() - t_all:.0f} s; {load()}; "
          f"uptime: {os.popen('uptime').read().strip()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    asyncio.run(main())
