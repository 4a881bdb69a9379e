"""Beta ⇄ GA translation of Realtime events: pure functions over dicts.

GA is the gateway's internal dialect.  :mod:`openopen8.stages.dialect` uses
these functions at the two edges of the stage chain; the web layer may reuse
them (e.g. for the beta ``POST /v1/realtime/sessions`` body).  The rules are
written up in ``docs/dialects-and-audio.md``; the tables below are the
authority.

Conventions:

* ``*_to_ga`` / ``*_to_beta`` take a dict and return a dict.  Functions on
  sessions, responses and ``response.create`` options build a new dict (key
  order matters for readable wire text); functions on items mutate in place
  and return whether anything changed.
* Unknown keys are copied through untouched, in both directions.
* When a request carries both a GA field and its beta alias, the GA field
  wins and the alias is dropped.
* Values are whatever JSON a client or an upstream sent: the functions
  check a value's type before they use it as a dict, a list or a key, and
  copy what they do not understand.
"""

from __future__ import annotations

from typing import Any

GA = "ga"
BETA = "beta"

# --------------------------------------------------------------------------
# server event names

#: GA server event type -> beta server event type (protocol.md §2.2, "R")
SERVER_TYPES_GA_TO_BETA: dict[str, str] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}
SERVER_TYPES_BETA_TO_GA: dict[str, str] = {v: k for k, v in SERVER_TYPES_GA_TO_BETA.items()}

# --------------------------------------------------------------------------
# audio formats

#: beta format name -> GA ``format.type``
FORMAT_BETA_TO_GA: dict[str, str] = {
    "pcm16": "audio/pcm",
    "g711_ulaw": "audio/pcmu",
    "g711_alaw": "audio/pcma",
}
FORMAT_GA_TO_BETA: dict[str, str] = {v: k for k, v in FORMAT_BETA_TO_GA.items()}

#: the only PCM rate beta (and OpenAI GA) knows; other rates are a gateway
#: extension carried in ``input_audio_sample_rate`` / ``output_audio_sample_rate``
BETA_PCM_RATE = 24000


def format_to_ga(name: Any, rate: Any = None) -> Any:
    """Beta format name (+ optional sample rate) -> GA format object.

    ``pcm16`` becomes ``{"type": "audio/pcm", "rate": rate or 24000}``.  An
    unknown name becomes ``{"type": name}`` so that whoever checks formats
    (the audio stage, or OpenAI) rejects it with a clear message.
    """
    ga_type = FORMAT_BETA_TO_GA.get(name) if isinstance(name, str) else None
    if ga_type is None:
        return {"type": name}
    if ga_type == "audio/pcm":
        return {"type": ga_type, "rate": rate if rate is not None else BETA_PCM_RATE}
    return {"type": ga_type}


#: said after a format error to a client that wrote beta names
BETA_FORMATS_HINT = (" (beta names: 'pcm16' -- 24 kHz, or another rate in "
                     "input_audio_sample_rate / output_audio_sample_rate -- 'g711_ulaw', "
                     "'g711_alaw'.)")


def aliased_formats(src: dict[str, Any], ga: dict[str, Any], where: str,
                    sides: tuple[str, ...] = ("input", "output")
                    ) -> list[tuple[str, str, Any]]:
    """The formats in ``ga`` (a translated session or ``response.create``
    options) that came from beta names in ``src`` (``{side}_audio_format`` /
    ``{side}_audio_sample_rate``): ``(side, GA param, format)`` with the GA
    param ``{where}.audio.{side}.format``, so a bad one can be named the way
    the client wrote it.  A side whose GA ``format`` the client also wrote
    is left out: that one won."""
    out: list[tuple[str, str, Any]] = []
    audio = src.get("audio")
    ga_audio = ga.get("audio")
    for side in sides:
        if f"{side}_audio_format" not in src and f"{side}_audio_sample_rate" not in src:
            continue
        written = audio.get(side) if isinstance(audio, dict) else None
        if isinstance(written, dict) and "format" in written:
            continue
        got = ga_audio.get(side) if isinstance(ga_audio, dict) else None
        if isinstance(got, dict) and "format" in got:
            out.append((side, f"{where}.audio.{side}.format", got["format"]))
    return out


def format_to_beta(fmt: Any) -> tuple[Any, Any]:
    """GA format object -> (beta name, sample rate or None when it is 24 kHz
    or irrelevant).  Unknown types come back as their ``type`` string."""
    if not isinstance(fmt, dict):
        return fmt, None
    ga_type = fmt.get("type")
    name = FORMAT_GA_TO_BETA.get(ga_type) if isinstance(ga_type, str) else None
    if name is None:
        return ga_type, None
    if name == "pcm16":
        rate = fmt.get("rate")
        return name, (rate if rate not in (None, BETA_PCM_RATE) else None)
    return name, None


# --------------------------------------------------------------------------
# modalities

def modalities_to_ga(v: Any) -> Any:
    """Beta ``["text","audio"]`` (any order) or ``["audio"]`` -> GA
    ``["audio"]`` (GA audio output always carries a transcript);
    ``["text"]`` stays."""
    if isinstance(v, list):
        if "audio" in v:
            return ["audio"]
        return list(v)
    return v


def modalities_to_beta(v: Any) -> Any:
    """GA ``["audio"]`` -> beta ``["audio","text"]``; ``["text"]`` stays."""
    if isinstance(v, list):
        if "audio" in v:
            return ["audio", "text"]
        return list(v)
    return v


# --------------------------------------------------------------------------
# items

_CONTENT_GA_TO_BETA = {"output_text": "text", "output_audio": "audio"}
_CONTENT_BETA_TO_GA_ASSISTANT = {"text": "output_text", "audio": "output_audio"}
_CONTENT_BETA_TO_GA_USER = {"text": "input_text"}   # a lenient fix, see docs


def item_to_beta(item: Any) -> bool:
    """Rename GA assistant content types in place (``output_text`` ->
    ``text``, ``output_audio`` -> ``audio``).  True if changed."""
    if not isinstance(item, dict):
        return False
    content = item.get("content")
    if not isinstance(content, list):
        return False
    changed = False
    for part in content:
        if isinstance(part, dict):
            t = part.get("type")
            new = _CONTENT_GA_TO_BETA.get(t) if isinstance(t, str) else None
            if new is not None:
                part["type"] = new
                changed = True
    return changed


def item_to_ga(item: Any) -> bool:
    """Rename beta content types in place: in assistant messages ``text`` ->
    ``output_text`` and ``audio`` -> ``output_audio``; in user/system
    messages ``text`` -> ``input_text``.  True if changed."""
    if not isinstance(item, dict):
        return False
    content = item.get("content")
    if not isinstance(content, list):
        return False
    table = (_CONTENT_BETA_TO_GA_ASSISTANT if item.get("role") == "assistant"
             else _CONTENT_BETA_TO_GA_USER)
    changed = False
    for part in content:
        if isinstance(part, dict):
            t = part.get("type")
            new = table.get(t) if isinstance(t, str) else None
            if new is not None:
                part["type"] = new
                changed = True
    return changed


def items_to_beta(items: Any) -> bool:
    changed = False
    if isinstance(items, list):
        for it in items:
            changed = item_to_beta(it) or changed
    return changed


def items_to_ga(items: Any) -> bool:
    changed = False
    if isinstance(items, list):
        for it in items:
            changed = item_to_ga(it) or changed
    return changed


# --------------------------------------------------------------------------
# sessions

#: beta fields GA has no place for: dropped (the stage warns once)
DROPPED_SESSION_FIELDS = ("temperature", "client_secret")

#: gateway extension fields (beta dialect only) giving a PCM rate
INPUT_RATE_FIELD = "input_audio_sample_rate"
OUTPUT_RATE_FIELD = "output_audio_sample_rate"

#: beta session fields -> where they live in GA (``audio.*`` paths are
#: nested).  The translators below implement it; :func:`has_beta_fields`
#: uses its keys.
SESSION_FIELDS_BETA_TO_GA: dict[str, str] = {
    "modalities": "output_modalities",
    "voice": "audio.output.voice",
    "speed": "audio.output.speed",
    "input_audio_format": "audio.input.format",
    "output_audio_format": "audio.output.format",
    "input_audio_transcription": "audio.input.transcription",
    "input_audio_noise_reduction": "audio.input.noise_reduction",
    "turn_detection": "audio.input.turn_detection",
    "max_response_output_tokens": "max_output_tokens",
}
BETA_ONLY_SESSION_FIELDS = frozenset(SESSION_FIELDS_BETA_TO_GA) | frozenset(
    DROPPED_SESSION_FIELDS) | {INPUT_RATE_FIELD, OUTPUT_RATE_FIELD}

# transcription sessions (beta: transcription_session.update, flat)
_TRANSCRIPTION_BETA_TO_GA = {
    "input_audio_format": "format",
    "input_audio_transcription": "transcription",
    "input_audio_noise_reduction": "noise_reduction",
    "turn_detection": "turn_detection",
}


def has_beta_fields(session: dict[str, Any]) -> bool:
    """Whether a session payload carries any beta-only top-level field (a
    GA-typed session may: seed 003 does)."""
    for k in session:
        if k in BETA_ONLY_SESSION_FIELDS:
            return True
    return False


def _sub(d: dict[str, Any], key: str) -> dict[str, Any]:
    """``d[key]`` as a fresh dict we may write into (copied if present)."""
    v = d.get(key)
    v = dict(v) if isinstance(v, dict) else {}
    d[key] = v
    return v


def session_to_ga(sess: dict[str, Any], *, input_rate: int | None = None,
                  output_rate: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """A beta (or mixed) ``session.update`` payload -> GA realtime session.

    Returns the GA session and the names of beta fields that were dropped
    because GA has no equivalent (``temperature``; ``client_secret``).
    ``input_rate`` / ``output_rate`` are the client's rate hints: they give
    the rate of a ``pcm16`` format that carries no explicit
    ``input_audio_sample_rate`` / ``output_audio_sample_rate``.
    GA fields already present win over their beta aliases.
    """
    if sess.get("type") == "transcription":
        return transcription_session_to_ga(sess, input_rate=input_rate)
    out: dict[str, Any] = {"type": sess.get("type", "realtime")}
    dropped: list[str] = []
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    for k, v in sess.items():
        if k == "type":
            continue
        if k == "modalities":
            out.setdefault("output_modalities", modalities_to_ga(v))
        elif k == "max_response_output_tokens":
            out.setdefault("max_output_tokens", v)
        elif k == "voice":
            audio_out["voice"] = v
        elif k == "speed":
            audio_out["speed"] = v
        elif k == "input_audio_format":
            audio_in["format"] = format_to_ga(v, sess.get(INPUT_RATE_FIELD, input_rate))
        elif k == "output_audio_format":
            audio_out["format"] = format_to_ga(v, sess.get(OUTPUT_RATE_FIELD, output_rate))
        elif k == INPUT_RATE_FIELD:
            if "input_audio_format" not in sess:
                audio_in["format"] = {"type": "audio/pcm", "rate": v}
        elif k == OUTPUT_RATE_FIELD:
            if "output_audio_format" not in sess:
                audio_out["format"] = {"type": "audio/pcm", "rate": v}
        elif k == "input_audio_transcription":
            audio_in["transcription"] = v
        elif k == "input_audio_noise_reduction":
            audio_in["noise_reduction"] = v
        elif k == "turn_detection":
            audio_in["turn_detection"] = v
        elif k in DROPPED_SESSION_FIELDS:
            if v is not None:
                dropped.append(k)
        elif k == "output_modalities":
            out["output_modalities"] = v
        elif k == "max_output_tokens":
            out["max_output_tokens"] = v
        else:
            out[k] = v
    if audio_in or audio_out:
        audio = _sub(out, "audio")
        if audio_in:
            ain = _sub(audio, "input")
            for k, v in audio_in.items():
                ain.setdefault(k, v)
        if audio_out:
            aout = _sub(audio, "output")
            for k, v in audio_out.items():
                aout.setdefault(k, v)
    return out, dropped


def transcription_session_to_ga(sess: dict[str, Any], *, input_rate: int | None = None
                                ) -> tuple[dict[str, Any], list[str]]:
    """A beta ``transcription_session.update`` payload (or a GA transcription
    session with beta fields) -> GA ``{"type": "transcription", ...}``.
    ``modalities`` has no GA equivalent in a transcription session and is
    dropped silently (it never changed what a transcription session did)."""
    out: dict[str, Any] = {"type": "transcription"}
    dropped: list[str] = []
    audio_in: dict[str, Any] = {}
    for k, v in sess.items():
        if k == "type":
            continue
        ga = _TRANSCRIPTION_BETA_TO_GA.get(k)
        if ga == "format":
            audio_in["format"] = format_to_ga(v, sess.get(INPUT_RATE_FIELD, input_rate))
        elif ga is not None:
            audio_in[ga] = v
        elif k == INPUT_RATE_FIELD:
            if "input_audio_format" not in sess:
                audio_in["format"] = {"type": "audio/pcm", "rate": v}
        elif k == "modalities":
            continue
        elif k in DROPPED_SESSION_FIELDS:
            if v is not None:
                dropped.append(k)
        else:
            out[k] = v
    if audio_in:
        ain = _sub(_sub(out, "audio"), "input")
        for k, v in audio_in.items():
            ain.setdefault(k, v)
    return out, dropped


def session_to_beta(sess: dict[str, Any]) -> dict[str, Any]:
    """A GA realtime session (a ``session.update`` payload or the session
    object of ``session.created``/``updated``) -> the flat beta shape.

    A PCM rate other than 24 kHz is written as ``input_audio_sample_rate`` /
    ``output_audio_sample_rate`` next to ``"pcm16"``.  GA-only keys nested
    under ``audio`` that beta has no name for stay under ``audio``.
    """
    if sess.get("type") == "transcription":
        return transcription_session_to_beta(sess)
    out: dict[str, Any] = {}
    for k, v in sess.items():
        if k == "type":
            continue
        if k == "output_modalities":
            out["modalities"] = modalities_to_beta(v)
        elif k == "max_output_tokens":
            out["max_response_output_tokens"] = v
        elif k == "audio" and isinstance(v, dict):
            rest = _audio_to_beta(v, out)
            if rest:
                out["audio"] = rest
        else:
            out[k] = v
    return out


def _audio_to_beta(audio: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Flatten GA ``audio`` into ``out``; return what beta has no name for."""
    rest: dict[str, Any] = {}
    for side, v in audio.items():
        if side not in ("input", "output") or not isinstance(v, dict):
            rest[side] = v
            continue
        left: dict[str, Any] = {}
        for k, x in v.items():
            if k == "format":
                name, rate = format_to_beta(x)
                out[f"{side}_audio_format"] = name
                if rate is not None:
                    out[f"{side}_audio_sample_rate"] = rate
            elif side == "input" and k == "transcription":
                out["input_audio_transcription"] = x
            elif side == "input" and k == "noise_reduction":
                out["input_audio_noise_reduction"] = x
            elif side == "input" and k == "turn_detection":
                out["turn_detection"] = x
            elif side == "output" and k == "voice":
                out["voice"] = x
            elif side == "output" and k == "speed":
                out["speed"] = x
            else:
                left[k] = x
        if left:
            rest[side] = left
    return rest


def transcription_session_to_beta(sess: dict[str, Any]) -> dict[str, Any]:
    """A GA transcription session -> the flat beta transcription session."""
    out: dict[str, Any] = {}
    for k, v in sess.items():
        if k == "type":
            continue
        if k == "audio" and isinstance(v, dict):
            rest = _audio_to_beta(v, out)
            if rest:
                out["audio"] = rest
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------
# response.create options and the response object

def response_params_to_ga(resp: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Beta (or mixed) ``response.create.response`` -> GA (protocol.md §3.4).
    Returns the GA dict and the dropped beta field names (``temperature``)."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    audio_out: dict[str, Any] = {}
    for k, v in resp.items():
        if k == "modalities":
            out.setdefault("output_modalities", modalities_to_ga(v))
        elif k == "max_response_output_tokens":
            out.setdefault("max_output_tokens", v)
        elif k == "voice":
            audio_out["voice"] = v
        elif k == "output_audio_format":
            audio_out["format"] = format_to_ga(v, resp.get(OUTPUT_RATE_FIELD))
        elif k == OUTPUT_RATE_FIELD:
            if "output_audio_format" not in resp:
                audio_out["format"] = {"type": "audio/pcm", "rate": v}
        elif k == "temperature":
            if v is not None:
                dropped.append(k)
        elif k == "input":
            items_to_ga(v)
            out[k] = v
        else:
            out[k] = v
    if audio_out:
        aout = _sub(_sub(out, "audio"), "output")
        for k, v in audio_out.items():
            aout.setdefault(k, v)
    return out, dropped


def response_params_to_beta(resp: dict[str, Any], *, _object: bool = False) -> dict[str, Any]:
    """GA ``response.create.response`` -> beta (for a beta upstream)."""
    out: dict[str, Any] = {}
    for k, v in resp.items():
        if k == "output_modalities":
            out["modalities"] = modalities_to_beta(v)
        elif k == "max_output_tokens" and not _object:
            out["max_response_output_tokens"] = v
        elif k == "audio" and isinstance(v, dict):
            rest = _response_audio_to_beta(v, out)
            if rest:
                out["audio"] = rest
        elif k == "input":
            items_to_beta(v)
            out[k] = v
        else:
            out[k] = v
    return out


def _response_audio_to_beta(audio: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    rest: dict[str, Any] = {}
    for side, v in audio.items():
        if side != "output" or not isinstance(v, dict):
            rest[side] = v
            continue
        left: dict[str, Any] = {}
        for k, x in v.items():
            if k == "voice":
                out["voice"] = x
            elif k == "format":
                name, rate = format_to_beta(x)
                out["output_audio_format"] = name
                if rate is not None:
                    out[OUTPUT_RATE_FIELD] = rate
            else:
                left[k] = x
        if left:
            rest["output"] = left
    return rest


def response_object_to_beta(resp: dict[str, Any]) -> dict[str, Any]:
    """GA response object (``response.created``/``done``) -> beta (§3.5)."""
    # the response object is named ``max_output_tokens`` in beta as well
    out = response_params_to_beta(resp, _object=True)
    items_to_beta(out.get("output"))
    return out


def response_object_to_ga(resp: dict[str, Any]) -> dict[str, Any]:
    """Beta response object -> GA.  ``temperature`` has no GA field: dropped."""
    out: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    for k, v in resp.items():
        if k == "modalities":
            out["output_modalities"] = modalities_to_ga(v)
        elif k == "voice":
            audio_out["voice"] = v
        elif k == "output_audio_format":
            audio_out["format"] = format_to_ga(v, resp.get(OUTPUT_RATE_FIELD))
        elif k in ("temperature", OUTPUT_RATE_FIELD):
            continue
        elif k == "output":
            items_to_ga(v)
            out[k] = v
        else:
            out[k] = v
    if audio_out:
        aout = _sub(_sub(out, "audio"), "output")
        for k, v in audio_out.items():
            aout.setdefault(k, v)
    return out


# --------------------------------------------------------------------------
# error params

#: GA ``error.param`` prefixes -> the beta field the client actually sent
_PARAM_GA_TO_BETA = (
    ("session.audio.input.format", "session.input_audio_format"),
    ("session.audio.output.format", "session.output_audio_format"),
    ("session.audio.input.transcription", "session.input_audio_transcription"),
    ("session.audio.input.noise_reduction", "session.input_audio_noise_reduction"),
    ("session.audio.input.turn_detection", "session.turn_detection"),
    ("session.audio.output.voice", "session.voice"),
    ("session.audio.output.speed", "session.speed"),
    ("session.output_modalities", "session.modalities"),
    ("session.max_output_tokens", "session.max_response_output_tokens"),
    ("response.audio.output.format", "response.output_audio_format"),
    ("response.audio.output.voice", "response.voice"),
    ("response.output_modalities", "response.modalities"),
    ("response.max_output_tokens", "response.max_response_output_tokens"),
)


def param_to_beta(param: Any) -> Any:
    """Name a GA error ``param`` the way a beta client wrote it.

    ``session.audio.input.format.rate`` becomes
    ``session.input_audio_sample_rate``; other sub-paths keep their tail
    (``session.audio.input.turn_detection.threshold`` ->
    ``session.turn_detection.threshold``)."""
    if not isinstance(param, str):
        return param
    for ga, beta in _PARAM_GA_TO_BETA:
        if param == ga or param.startswith(ga + "."):
            tail = param[len(ga):]
            if tail == ".rate" and ga.endswith(".format"):
                side = "input" if ".input." in ga else "output"
                return f"session.{side}_audio_sample_rate" if ga.startswith("session") \
                    else "response." + OUTPUT_RATE_FIELD
            if tail.startswith(".") and ga.endswith(".format"):
                return beta
            return beta + tail
    return param


def param_for(dialect: str, ga_param: Any) -> Any:
    return param_to_beta(ga_param) if dialect == BETA else ga_param
