"""Helpers to run ``openopen8 talk`` for real in tests, against any gateway
(stand-in upstream, local engine …): make input audio, run the command as a
subprocess without blocking the test's event loop, read what it printed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TALK = [sys.executable, "-m", "openopen8.cli", "talk"]


def tone_wav(path: Path, rate: int = 16000, channels: int = 2, lead_ms: int = 100,
             tone_ms: int = 600, tail_ms: int = 300, hz: float = 440.0, amp: float = 0.4,
             bursts: int = 1, gap_ms: int = 600) -> Path:
    """A PCM16 WAV: silence, ``bursts`` tone bursts (loud enough for an energy VAD)
    ``gap_ms`` apart, silence.  Channels carry the tone at different levels, to
    exercise the downmix."""
    n = lambda ms: rate * ms // 1000  # noqa: E731
    t = np.arange(n(tone_ms)) / rate
    burst = amp * np.sin(2 * np.pi * hz * t)
    parts = [np.zeros(n(lead_ms))]
    for i in range(bursts):
        parts += [burst, np.zeros(n(gap_ms if i < bursts - 1 else tail_ms))]
    mono = np.concatenate(parts)
    frames = np.stack([mono * (1.0 - 0.3 * c) for c in range(channels)], axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((frames * 32767).astype("<i2").tobytes())
    return path


def wav_info(path: Path) -> tuple[int, int, int]:
    """(rate, channels, frames) of a WAV."""
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getnframes()


@dataclass
class TalkRun:
    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict]:
        """``--json`` output: one server event per line (every line must parse)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


async def start_talk(url: str, *args: str, token: str | None = None, model: str | None = None,
                     env: dict[str, str] | None = None, stdin: Any = asyncio.subprocess.DEVNULL,
                     ) -> asyncio.subprocess.Process:
    """Start ``python -m openopen8.cli talk --url URL [--model M] ARGS`` (the token
    through ``OPENOPEN8_TOKEN``), stdout and stderr piped."""
    e = {**os.environ, **(env or {}), "COLUMNS": "200"}
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
    e.pop("OPENOPEN8_TOKEN", None)
    if token is not None:
        e["OPENOPEN8_TOKEN"] = token
    cmd = [*TALK, "--url", url, *(["--model", model] if model else []), *args]
    return await asyncio.create_subprocess_exec(*cmd, stdin=stdin, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=e)


async def finish_talk(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> TalkRun:
    """Wait for a started talk without blocking the event loop (the gateway under
    test may be serving from this same loop)."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"talk did not end in {timeout} s\n{out.decode()}\n{err.decode()}")
    return TalkRun(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())


async def run_talk(url: str, *args: str, token: str | None = None, model: str | None = None,
                   timeout: float = 30.0, env: dict[str, str] | None = None) -> TalkRun:
    """Run talk to the end; see :func:`start_talk`."""
    proc = await start_talk(url, *args, token=token, model=model, env=env)
    return await finish_talk(proc, timeout)


def gateway_root(ws_url: str) -> str:
    """``ws://127.0.0.1:PORT/v1/realtime`` → ``ws://127.0.0.1:PORT`` (what users pass)."""
    return ws_url.split("/v1/realtime")[0]
