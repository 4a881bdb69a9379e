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


# a link as a word: scheme or www., or a host ending in a common top-level domain
_LINK = re.compile(r"^(?:https?://|www\.)\S+$|^[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|gov|edu|"
                   r"co|uk|ai|app|dev|info|us|tv|me)(?:/\S*)?$", re.I)
_LIST_MARK = re.compile(r"^(?:\d{1,2}[.)]|[-*•+]|#+)$")
_TRAIL = ".,;:!?)\"'"


def _speak_link(word: str) -> str:
    """A link as a listener can take it: the site's name ("bbc.co.uk/news" →
    "bbc"), never letters and slashes."""
    core = word.rstrip(_TRAIL)
    tail = word[len(core):]
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", core, flags=re.I).split("/")[0]
    name = host.split(".")[0]
    return (name + tail) if name else tail


class SpeechText:
    """Streamed LLM text → text a voice should say, word by word.

    Holds back the word still being written (a link or a list marker spans
    several tokens), then: a link becomes the site's name, list markers and
    headings at the start of a line go, a line break ends the sentence before
    it, markdown emphasis and emoji go."""

    def __init__(self) -> None:
        self._buf = ""
        self._line_start = True
        self._out_tail = ""        # last character emitted

    def push(self, text: str) -> str:
        self._buf += text
        out = []
        while True:
            m = re.search(r"\s", self._buf)
            if m is None:
                break
            word, sep = self._buf[: m.start()], self._buf[m.start()]
            self._buf = self._buf[m.start() + 1:]
            out.append(self._word(word, sep))
        return "".join(out)

    def flush(self) -> str:
        word, self._buf = self._buf, ""
        return self._word(word, "").rstrip() if word else ""

    def _word(self, word: str, sep: str) -> str:
        res = ""
        if word:
            if self._line_start and _LIST_MARK.match(word):
                word = ""
            elif _LINK.match(word.rstrip(_TRAIL)):
                word = _speak_link(word)
            word = clean_for_speech(word).strip()
            if word:
                res = word
                self._line_start = False
        if sep == "\n":
            if not self._line_start:
                last = (res or self._out_tail)[-1:] if (res or self._out_tail) else ""
                if last and last not in ".!?:;,":
                    res += "."
            self._line_start = True
            res += " " if res or self._out_tail[-1:] not in (" ", "") else ""
        elif sep:
            res += " " if res else ""
        if res:
            self._out_tail = res
        return res


_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]*$")


def ends_sentence(text: str) -> bool:
    return bool(_ENDS_SENTENCE.search(text.strip()))


_MORE = re.compile(r"\b(more|details?|detailed|explain|describe|story|stories|steps|list|"
                   r"elaborate|everything|long)\b", re.I)


def sentence_limit(last_user: str, limit: int) -> int:
    """How many sentences a spoken reply may have: ``limit``, three times as
    many when the user asks for more (0: no limit)."""
    if limit <= 0:
        return 0
    return limit * 3 if _MORE.search(last_user or "") else limit


def sentence_ends(text: str) -> list[int]:
    """Indices just past each sentence end in ``text`` (followed by a space or
    at its end)."""
    return [m.end() for m in re.finditer(r"[.!?]+[\"')\]]*(?=\s|$)", text)]


def last_sentence_end(text: str) -> int:
    """Index just past the last sentence end in ``text`` followed by a space
    (or at its end); 0 when there is none."""
    best = 0
    for m in re.finditer(r"[.!?]+[\"')\]]*(?=\s|$)", text):
        best = m.end()
    return best


class ClauseChunker:
    """``first_max_words`` (0 = off): the first clause is also cut at a word
    boundary after that many words when no punctuation came first, so
    speech starts after a few words instead of a whole sentence (Piper's time
    grows with the clause: "The capital of France" is about 60% of "The
    capital of France is Paris.")."""

    def __init__(self, first_min_words: int = 3, min_chars: int = 12,
                 max_chars: int = 180, first_max_words: int = 0) -> None:
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0
        self._word_cut = False

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
                if len(head) >= self.min_chars or (first and len(head.split()) >= 2) \
                        or self._word_cut:
                    self._word_cut = False
                    return i + 1
            elif ch in _CLAUSE_END:
                if first and len(head.split()) >= self.first_min_words:
                    return i + 1
                if len(head) >= self.max_chars // 2:
                    return i + 1
        if len(buf) > self.max_chars:
            sp = buf.rfind(" ", 0, self.max_chars)
            return sp if sp > 0 else self.max_chars
        if first and self.first_max_words:
            # words complete so far (each followed by a space)
            ends = [m.start() for m in re.finditer(r"(?<=\S)\s", buf)]
            if len(ends) >= self.first_max_words:
                self._word_cut = True      # its sentence's end is the next cut
                return ends[self.first_max_words - 1]
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
