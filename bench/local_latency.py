"""Local engine latency: end of speech → first audio delta, on the real models.

Utterances are synthesized at run time with the engine's Piper voice, then
streamed into a fresh session at real-time pace in 20 ms appends with server
VAD, while a reader timestamps the server events.  Printed:

* end of speech → first ``response.output_audio.delta`` (median, p90), from
  the true end of speech in the audio and from ``speech_stopped`` (the VAD's
  end-of-turn, ``silence_duration_ms`` later);
* where the time after ``speech_stopped`` goes: waiting for STT, LLM first
  token, first clause through TTS;
* real-time factors of STT and TTS, and LLM tokens per second, measured on
  the same utterances in isolation.

Run:  PYTHONPATH=. python bench/local_latency.py [--runs 12] [--stt whisper-base]
                  [--sessions 2] [--silence-ms 200] [--no-speculation]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openopen8.engine.backends.base import LlmRequest  # noqa: E402
from openopen8.engine.codec import resample  # noqa: E402
from openopen8.engine.config import EngineConfig  # noqa: E402
from openopen8.engine.runtime import get_engine  # noqa: E402
from openopen8.events import Event  # noqa: E402

UTTERANCES = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Can you tell me a good name for a cat?",
    "What color is the sky on a clear day?",
    "Please give me a tip for sleeping better.",
    "What is two plus two?",
]
LEAD_MS = 400
CHUNK_MS = 20


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def one_turn(engine, pcm24k: bytes, tail_ms: int) -> dict[str, float] | None:
    ep = await engine.open_session("", "openopen8-local")
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def reader() -> None:
        while True:
            ev = await ep.recv()
            if ev is None:
                return
            seen.setdefault(ev.type, time.monotonic())
            if ev.type == "response.done":
                done.set()

    rd = asyncio.ensure_future(reader())
    audio = bytes(48 * LEAD_MS) + pcm24k + bytes(48 * tail_ms)
    step = 48 * CHUNK_MS
    t0 = time.monotonic()
    for i, off in enumerate(range(0, len(audio), step)):
        await ep.send(Event.from_data({"type": "input_audio_buffer.append",
                                       "audio": base64.b64encode(audio[off:off + step]).decode()}))
        delay = t0 + (i + 1) * CHUNK_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    try:
        await asyncio.wait_for(done.wait(), 30)
    except asyncio.TimeoutError:
        pass
    resp = ep.session.finished[-1] if ep.session.finished else None
    early = ep.stats["adopted"]
    await ep.close()
    rd.cancel()
    if resp is None or "response.output_audio.delta" not in seen:
        return None
    t_eos = t0 + (LEAD_MS + len(pcm24k) / 48) / 1000
    tm = resp.timings
    stop = tm.get("speech_stopped", tm["created"])
    return {
        "eos_to_audio": seen["response.output_audio.delta"] - t_eos,
        "stop_to_audio": seen["response.output_audio.delta"]
        - seen["input_audio_buffer.speech_stopped"],
        "stt_wait": tm["context_ready"] - stop,
        "head_start": stop - tm["pipeline_start"],
        "llm_first": tm["llm_first"] - tm["pipeline_start"],
        "tts_first": tm["tts_first"] - tm["llm_first"],
        "early": float(early),
        "reply": resp.text,
    }


async def isolated(engine, clips: list[np.ndarray]) -> dict[str, float]:
    b = engine.backends
    stt_rtf, tts_rtf, tok_s = [], [], []
    for text, pcm in zip(UTTERANCES, clips):
        a16 = resample(pcm, 24000, 16000)
        t = time.perf_counter()
        await b.stt.transcribe(a16)
        stt_rtf.append((time.perf_counter() - t) / (a16.size / 16000))
        t = time.perf_counter()
        out = await b.tts.synthesize("Sure. " + text)
        tts_rtf.append((time.perf_counter() - t) / max(out.size / 24000, 1e-3))
        req = LlmRequest(messages=[{"role": "system", "content": engine.cfg.instructions},
                                   {"role": "user", "content": text}], max_tokens=60)
        stream = b.llm.stream(req)
        n, t, first = 0, time.perf_counter(), None
        async for _ in stream:
            first = first or time.perf_counter()
            n += 1
        if first and n > 1:
            tok_s.append((n - 1) / max(time.perf_counter() - first, 1e-6))
    return {"stt_rtf": statistics.median(stt_rtf), "tts_rtf": statistics.median(tts_rtf),
            "llm_tok_s": statistics.median(tok_s) if tok_s else float("nan")}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--stt", default="whisper-tiny.en")
    ap.add_argument("--sessions", type=int, default=1, help="concurrent sessions per run")
    ap.add_argument("--no-speculation", action="store_true")
    ap.add_argument("--silence-ms", type=int, default=EngineConfig().silence_duration_ms,
                    help="server VAD silence_duration_ms")
    args = ap.parse_args()
    cfg = EngineConfig(stt=args.stt, speculative_stt_ms=0 if args.no_speculation else 120,
                       silence_duration_ms=args.silence_ms)
    engine = get_engine(cfg)
    t = time.perf_counter()
    engine.load_sync()
    load_s = time.perf_counter() - t
    tts = engine.backends.tts
    clips = [await tts.synthesize(u) for u in UTTERANCES]
    load_before = os.getloadavg()[0]
    results = []
    for i in range(args.runs):
        batch = await asyncio.gather(*(
            one_turn(engine, clips[(i + k) % len(clips)].astype("<i2").tobytes(),
                     cfg.silence_duration_ms + 800) for k in range(args.sessions)))
        results += [r for r in batch if r]
    iso = await isolated(engine, clips)
    load_after = os.getloadavg()[0]
    print(f"local engine latency: stt={cfg.stt} llm={cfg.llm} tts={cfg.tts} "
          f"vad={cfg.vad} silence_duration_ms={cfg.silence_duration_ms} "
          f"speculative_stt_ms={cfg.speculative_stt_ms} sessions={args.sessions}")
    print(f"cold load {load_s:.1f} s; {len(results)}/{args.runs * args.sessions} turns with "
          f"audio; machine load average {load_before:.1f} → {load_after:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"turns whose response work started at the pause (speculative): "
          f"{sum(r['early'] for r in results):.0f}/{len(results)}")
    for key, label in (("eos_to_audio", "end of speech → first audio delta"),
                       ("stop_to_audio", "speech_stopped  → first audio delta"),
                       ("stt_wait", "  STT still running at speech_stopped"),
                       ("head_start", "  LLM+TTS started before speech_stopped"),
                       ("llm_first", "  LLM first token (from its start)"),
                       ("tts_first", "  first clause + TTS (after 1st token)")):
        xs = [r[key] for r in results]
        if xs:
            print(f"{label:38s} median {statistics.median(xs):.3f} s   p90 {pct(xs, 0.9):.3f} s")
    if results:
        work = [r["stt_wait"] + r["llm_first"] + r["tts_first"] for r in results]
        for key in ("stt_wait", "llm_first", "tts_first"):
            share = statistics.median([r[key] / w for r, w in zip(results, work) if w > 0])
            print(f"  share of the model work (STT wait + LLM + TTS): {key:9s} {share:5.0%}")
    print(f"STT real-time factor {iso['stt_rtf']:.3f}; TTS real-time factor "
          f"{iso['tts_rtf']:.3f}; LLM {iso['llm_tok_s']:.0f} tokens/s")
    for r in results[:3]:
        print("  reply:", r["reply"][:100])


if __name__ == "__main__":
    asyncio.run(main())
