"""Text helpers: streamed LLM tokens → speakable clauses, and word timing.

``ClauseChunker`` cuts the token stream so TTS can start early: the first
clause is cut at the first comma/colon/semicolon after a few words (or at a
sentence end), later ones at sentence ends, with a length cap.  ``align``
spreads a clause's words over its audio so every audio delta carries the
words spoken in it: that is what the transcript deltas, barge-in and
``conversation.item.truncate`` rely on.
"""

from __future__ import annotations

import re

_SENTENCE_END = ".!?"
_CLAUSE_END = ",;:"
_MARKDOWN = re.compile(r"[*_`#~]+|\[(?:\d+)\]")
_SPACES = re.compile(r"\s+")
# characters TTS cannot speak (emoji and most symbols outside Latin ranges)
_UNSPEAKABLE = re.compile("[\U0001F000-\U0001FFFF\u2600-\u27BF]")


def clean_for_speech(text: str) -> str:
    text = _MARKDOWN.sub("", text)
    text = _UNSPEAKABLE.sub("", text)
    return _SPACES.sub(" ", text)


class ClauseChunker:
    def __init__(self, first_min_words: int = 3, min_chars: int = 12,
                 max_chars: int = 180) -> None:
        self.first_min_words = first_min_words
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut], self._buf[cut:]
            piece = piece.strip()
            if piece:
                out.append(piece)
                self._emitted += 1
        return out

    def flush(self) -> list[str]:
        piece, self._buf = self._buf.strip(), ""
        if piece:
            self._emitted += 1
            return [piece]
        return []

    def _find_cut(self) -> int | None:
        buf = self._buf
        first = self._emitted == 0
        # a cut needs the character after the punctuation, so "3.5" and
        # "e.g." mid-word are not split
        for i in range(len(buf) - 1):
            ch = buf[i]
            if not buf[i + 1].isspace():
                continue
            head = buf[: i + 1].strip()
            if ch in _SENTENCE_END:
                if len(head) >= self.min_chars or (first and len(head.split()) >= 2):
                    return i + 1
            elif ch in _CLAUSE_END:
                if first and len(head.split()) >= self.first_min_words:
                    return i + 1
                if len(head) >= self.max_chars // 2:
                    return i + 1
        if len(buf) > self.max_chars:
            sp = buf.rfind(" ", 0, self.max_chars)
            return sp if sp > 0 else self.max_chars
        return None


def align(words_text: str, n_samples: int, chunk_samples: int) -> list[str]:
    """Split ``words_text`` into one piece per audio chunk of ``chunk_samples``.

    Each word is placed at the time its end is spoken, assuming speech time
    proportional to character count; piece *i* holds the words that end
    inside chunk *i*.  Joining the pieces gives ``words_text`` back exactly.
    """
    n_chunks = max(1, -(-n_samples // chunk_samples))
    pieces = [""] * n_chunks
    if not words_text:
        return pieces
    tokens = re.findall(r"\s*\S+", words_text)
    total = sum(len(t.strip()) + 1 for t in tokens)
    acc = 0
    for t in tokens:
        acc += len(t.strip()) + 1
        end_sample = n_samples * acc / total
        idx = min(n_chunks - 1, max(0, int(-(-end_sample // chunk_samples)) - 1))
        pieces[idx] += t
    tail = words_text[len("".join(pieces)):]
    pieces[-1] += tail
    return pieces
