"""Turn detection: per-frame speech probabilities → speech started / stopped.

No I/O and no model here: a VAD backend turns audio into probabilities, this
class decides where turns begin and end on the session's audio timeline
(milliseconds since the first appended sample), following OpenAI's
``server_vad`` knobs:

* speech starts once ``min_speech_ms`` of frames at or above ``threshold``
  arrive with no long gap; ``audio_start_ms`` reaches back
  ``prefix_padding_ms`` before the first such frame;
* speech stops after ``silence_duration_ms`` of frames below
  ``threshold - 0.15`` (hysteresis, so a dip mid-word does not end a turn);
  ``audio_end_ms`` is the end of that silence, as OpenAI reports it;
* with ``pause_ms`` set, a ``pause`` event marks the moment a silence has
  lasted that long (the turn will probably end) and ``resume`` the return of
  speech after it: the engine starts transcribing at ``pause`` so the text is
  ready sooner after ``stop``;
* :meth:`TurnDetector.end_after` changes how long *this* pause must last to
  end the turn (``semantic_vad``: once the words so far are judged complete,
  a short silence is enough); it ends the turn at once when the pause is
  already that long.  Speech coming back forgets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass
class TurnEvent:
    kind: str            # "start" | "stop" | "pause" | "resume"
    audio_ms: int        # audio_start_ms / audio_end_ms
    onset_ms: int = 0    # start: first speech frame (without padding)


class TurnDetector:
    def __init__(self, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500, min_speech_ms: int = 64,
                 pause_ms: int | None = None) -> None:
        self.threshold = threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.min_speech_ms = min_speech_ms
        self.pause_ms = pause_ms
        self._paused = False
        #: timeline position of the current pause's ``pause`` event
        self.pause_at: int | None = None
        #: silence that ends the turn in the current pause (None: the default)
        self.hold_ms: float | None = None
        self.pos_ms = 0.0          # end of the audio seen so far
        self.in_speech = False
        self._cand_ms: float | None = None   # onset of a not-yet-confirmed start
        self._cand_speech = 0.0
        self._cand_gap = 0.0
        self._silence = 0.0

    def configure(self, threshold: float, prefix_padding_ms: int,
                  silence_duration_ms: int) -> None:
        self.threshold = threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms

    def reset(self) -> None:
        """Forget any turn in progress (buffer cleared, VAD switched off)."""
        self.in_speech = False
        self._cand_ms = None
        self._cand_speech = self._cand_gap = self._silence = 0.0
        self._paused = False
        self.pause_at = None
        self.hold_ms = None

    def end_after(self, ms: float) -> "TurnEvent | None":
        """The current pause ends the turn once it lasts ``ms``; returns the
        ``stop`` event if it already has."""
        if not self.in_speech or self._silence <= 0:
            return None
        self.hold_ms = ms
        if self._silence >= ms:
            return self._stop()
        return None

    def _stop(self) -> "TurnEvent":
        self.in_speech = False
        self._silence = 0.0
        self._paused = False
        self.pause_at = None
        self.hold_ms = None
        return TurnEvent("stop", int(self.pos_ms))

    def skip(self, ms: float) -> None:
        """Advance the timeline over audio the VAD did not see."""
        self.pos_ms += ms

    def feed(self, probs: Iterable[float], frame_ms: float) -> list[TurnEvent]:
        out: list[TurnEvent] = []
        hi = self.threshold
        lo = max(0.01, hi - 0.15)
        for p in probs:
            start = self.pos_ms
            self.pos_ms += frame_ms
            if not self.in_speech:
                if p >= hi:
                    if self._cand_ms is None:
                        self._cand_ms = start
                        self._cand_speech = 0.0
                    self._cand_speech += frame_ms
                    self._cand_gap = 0.0
                    if self._cand_speech >= self.min_speech_ms:
                        onset = self._cand_ms
                        self.in_speech = True
                        self._silence = 0.0
                        self._cand_ms = None
                        out.append(TurnEvent("start",
                                             int(max(0.0, onset - self.prefix_padding_ms)),
                                             int(onset)))
                elif self._cand_ms is not None:
                    self._cand_gap += frame_ms
                    if self._cand_gap > 2 * frame_ms:
                        self._cand_ms = None
            else:
                if p < lo:
                    self._silence += frame_ms
                    limit = self.silence_duration_ms if self.hold_ms is None else self.hold_ms
                    if self._silence >= limit:
                        out.append(self._stop())
                    elif (self.pause_ms is not None and not self._paused
                          and self._silence >= min(self.pause_ms, self.silence_duration_ms)):
                        self._paused = True
                        self.pause_at = int(self.pos_ms)
                        out.append(TurnEvent("pause", int(self.pos_ms)))
                elif p >= hi:
                    self._silence = 0.0
                    self.hold_ms = None
                    if self._paused:
                        self._paused = False
                        self.pause_at = None
                        out.append(TurnEvent("resume", int(self.pos_ms)))
        return out
