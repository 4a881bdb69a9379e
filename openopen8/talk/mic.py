"""Microphone capture and reply playback with ``sounddevice`` (the optional
``mic`` extra).  PortAudio calls back on its own threads; audio crosses to
the event loop through ``call_soon_threadsafe`` and back through a locked
queue."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import numpy as np
import soxr

from .audio import AudioFormat

BLOCK_MS = 20


class MicUnavailable(Exception):
    """``--mic`` cannot work here; the message says why and what to do."""


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except ImportError:
        raise MicUnavailable("--mic needs the optional 'mic' extra: pip install 'openopen8[mic]'") from None
    except OSError as exc:  # the module is there, the PortAudio library is not
        raise MicUnavailable(f"--mic needs the PortAudio library ({exc}); on Debian or Ubuntu: "
                             "apt-get install libportaudio2") from None
    return sd


def _device(sd: Any, kind: str) -> dict:
    try:
        return sd.query_devices(kind=kind)
    except Exception:  # noqa: BLE001 - PortAudioError or ValueError: no such device
        pass
    try:
        devices = list(sd.query_devices())
    except Exception as exc:  # noqa: BLE001
        raise MicUnavailable(f"no audio devices can be listed on this machine ({exc})") from None
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    found = [d for d in devices if d.get(key, 0) > 0]
    if not found:
        what = "microphone (audio input device)" if kind == "input" else "speaker (audio output device)"
        raise MicUnavailable(f"no {what} exists on this machine; use --file or --text instead")
    return found[0]


def _rate(sd: Any, device: dict, want: int, kind: str) -> int:
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device["index"], samplerate=want, channels=1, dtype="int16")
        return want
    except Exception:  # noqa: BLE001
        return int(device.get("default_samplerate") or 48000)


class Player:
    """Reply audio waiting to be played, and how much of each item was heard."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, np.ndarray]] = deque()
        self.played: dict[str, int] = {}   # item id -> samples played (at the device rate)
        self.current: str | None = None

    def feed(self, item_id: str, samples: np.ndarray) -> None:
        with self._lock:
            self._queue.append((item_id, samples))

    def fill(self, out: np.ndarray) -> None:
        """Called on PortAudio's thread: fill ``out`` (int16, mono) and count."""
        n, pos = len(out), 0
        with self._lock:
            while pos < n and self._queue:
                item, samples = self._queue[0]
                take = min(n - pos, len(samples))
                out[pos:pos + take] = samples[:take]
                pos += take
                self.current = item
                self.played[item] = self.played.get(item, 0) + take
                if take == len(samples):
                    self._queue.popleft()
                else:
                    self._queue[0] = (item, samples[take:])
        out[pos:] = 0

    def stop(self) -> tuple[str | None, int, bool]:
        """Drop what is queued; return (item playing, samples of it played, whether
        anything was cut)."""
        with self._lock:
            cut = bool(self._queue)
            self._queue.clear()
            item = self.current
            return item, self.played.get(item, 0) if item else 0, cut


class MicIO:
    """One input stream (capture) and one output stream (playback)."""

    def __init__(self, in_fmt: AudioFormat, out_fmt: AudioFormat) -> None:
        self.sd = _sounddevice()
        self.in_dev, self.out_dev = _device(self.sd, "input"), _device(self.sd, "output")
        self.in_fmt, self.out_fmt = in_fmt, out_fmt
        self.in_rate = _rate(self.sd, self.in_dev, in_fmt.rate, "input")
        self.out_rate = _rate(self.sd, self.out_dev, out_fmt.rate, "output")
        self._up = soxr.ResampleStream(self.in_rate, in_fmt.rate, 1, dtype="int16") \
            if self.in_rate != in_fmt.rate else None
        self._down = soxr.ResampleStream(out_fmt.rate, self.out_rate, 1, dtype="int16") \
            if self.out_rate != out_fmt.rate else None
        self.player = Player()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=500)
        self._streams: list[Any] = []
        self._cut: set[str] = set()

    @property
    def description(self) -> str:
        return f"{self.in_dev.get('name', '?')} → {self.out_dev.get('name', '?')}"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def captured(indata: Any, frames: int, time: Any, status: Any) -> None:
            samples = np.frombuffer(bytes(indata), dtype=np.int16)
            if self._up is not None:
                samples = self._up.resample_chunk(samples)
            data = self.in_fmt.encode(samples)
            loop.call_soon_threadsafe(self._put, data)

        def play(outdata: Any, frames: int, time: Any, status: Any) -> None:
            out = np.frombuffer(outdata, dtype=np.int16)
            self.player.fill(out)

        try:
            inp = self.sd.RawInputStream(device=self.in_dev["index"], samplerate=self.in_rate,
                                         channels=1, dtype="int16", callback=captured,
                                         blocksize=self.in_rate * BLOCK_MS // 1000)
            outp = self.sd.RawOutputStream(device=self.out_dev["index"], samplerate=self.out_rate,
                                           channels=1, dtype="int16", callback=play,
                                           blocksize=self.out_rate * BLOCK_MS // 1000)
            inp.start()
            outp.start()
        except Exception as exc:  # noqa: BLE001 - PortAudioError
            self.stop()
            raise MicUnavailable(f"cannot open the audio devices ({exc})") from None
        self._streams = [inp, outp]

    def _put(self, data: bytes) -> None:
        if self.chunks.full():  # the socket is slower than the microphone: drop the oldest
            self.chunks.get_nowait()
        self.chunks.put_nowait(data)

    def play(self, item_id: str, wire: bytes) -> None:
        if item_id in self._cut:  # deltas already in flight when the user spoke over it
            return
        samples = self.out_fmt.decode(wire)
        if self._down is not None:
            samples = self._down.resample_chunk(samples)
        self.player.feed(item_id, samples)

    def barge_in(self) -> tuple[str | None, int] | None:
        """Stop playback; the (item, ms heard) to truncate, if a reply was cut."""
        item, samples, cut = self.player.stop()
        if not cut or item is None:
            return None
        self._cut.add(item)
        return item, samples * 1000 // self.out_rate

    def stop(self) -> None:
        for s in self._streams:
            try:
                s.stop()
                s.close()
            except Exception:  # noqa: BLE001
                pass
        self._streams = []


def open_mic(in_fmt: AudioFormat, out_fmt: AudioFormat) -> MicIO:
    return MicIO(in_fmt, out_fmt)


def check_mic() -> None:
    """Fail early (before connecting) when ``--mic`` cannot work here."""
    sd = _sounddevice()
    _device(sd, "input")
    _device(sd, "output")
