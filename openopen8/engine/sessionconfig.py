"""The GA session object: defaults, ``session.update`` validation, and the
per-response parameters of ``response.create``.

Validation follows OpenAI's codes: a rejected update raises
:class:`ProtocolError` and is discarded whole.  Unknown fields are ignored
(tolerant reader), known fields with bad values are errors.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .codec import FORMATS, PCM
from .config import EngineConfig


class ProtocolError(Exception):
    """A client event the engine refuses; becomes an ``error`` event."""

    def __init__(self, code: str | None, message: str, param: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type


def default_session(cfg: EngineConfig, session_id: str, model: str) -> dict[str, Any]:
    fmt = {"type": PCM, "rate": 24000}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "expires_at": int(time.time()) + 3600,
        "output_modalities": ["audio"],
        "instructions": cfg.instructions,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": dict(fmt),
                "noise_reduction": None,
                "transcription": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": cfg.vad_threshold,
                    "prefix_padding_ms": cfg.prefix_padding_ms,
                    "silence_duration_ms": cfg.silence_duration_ms,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(fmt), "voice": cfg.voice, "speed": 1.0},
        },
    }


# ----------------------------------------------------------------- validators

def _format(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("type") not in FORMATS:
        raise ProtocolError("invalid_value",
                            f"Invalid value for '{param}.type': expected one of "
                            f"{', '.join(FORMATS)}.", param + ".type")
    if value["type"] == PCM:
        rate = value.get("rate", 24000)
        if not isinstance(rate, int) or isinstance(rate, bool):
            raise ProtocolError("invalid_type", f"'{param}.rate' must be an integer.",
                                param + ".rate")
        if rate < 24000:
            raise ProtocolError("integer_below_min_value",
                                f"Invalid '{param}.rate': integer below minimum value. "
                                f"Expected a value >= 24000, but got {rate} instead.",
                                param + ".rate")
        if rate != 24000:
            raise ProtocolError("integer_above_max_value",
                                f"Invalid '{param}.rate': expected 24000, got {rate}.",
                                param + ".rate")
        return {"type": PCM, "rate": 24000}
    return {"type": value["type"]}


def _modalities(value: Any, param: str) -> list[str]:
    if (not isinstance(value, list) or len(value) != 1
            or value[0] not in ("audio", "text")):
        raise ProtocolError("invalid_value",
                            f"Invalid '{param}': supported values are ['audio'] or ['text'].",
                            param)
    return list(value)


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise ProtocolError("invalid_value",
                            f"Invalid '{param}': expected an integer 1-4096 or 'inf'.", param)
    return value


def _apply_common(src: dict, dst: dict, prefix: str) -> None:
    """Validate the fields a session and a response.create share
    (output_modalities, instructions, tools, tool_choice, max_output_tokens)
    from ``src`` into ``dst``; error params are named under ``prefix``."""
    if "output_modalities" in src:
        dst["output_modalities"] = _modalities(src["output_modalities"],
                                               f"{prefix}.output_modalities")
    if "instructions" in src:
        if not isinstance(src["instructions"], str):
            raise ProtocolError("invalid_type", f"'{prefix}.instructions' must be a string.",
                                f"{prefix}.instructions")
        dst["instructions"] = src["instructions"]
    if "tools" in src:
        dst["tools"] = _tools(src["tools"], f"{prefix}.tools")
    if "tool_choice" in src:
        dst["tool_choice"] = _tool_choice(src["tool_choice"], f"{prefix}.tool_choice")
    if "max_output_tokens" in src:
        dst["max_output_tokens"] = _max_tokens(src["max_output_tokens"],
                                               f"{prefix}.max_output_tokens")


def _tools(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ProtocolError("invalid_type", f"'{param}' must be an array.", param)
    out = []
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise ProtocolError("invalid_type", f"'{param}[{i}]' must be an object.",
                                f"{param}[{i}]")
        kind = t.get("type", "function")
        if kind == "function":
            name = t.get("name")
            if not isinstance(name, str) or not name:
                raise ProtocolError("missing_required_parameter",
                                    f"Missing required parameter: '{param}[{i}].name'.",
                                    f"{param}[{i}].name")
            params = t.get("parameters") or {"type": "object", "properties": {}}
            if not isinstance(params, dict):
                raise ProtocolError("invalid_type",
                                    f"'{param}[{i}].parameters' must be an object.",
                                    f"{param}[{i}].parameters")
            out.append({"type": "function", "name": name,
                        "description": t.get("description") or "",
                        "parameters": params})
        else:
            raise ProtocolError("invalid_value",
                                f"Invalid '{param}[{i}].type': the local engine supports "
                                f"only function tools.", f"{param}[{i}].type")
    return out


def _tool_choice(value: Any, param: str) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" \
            and isinstance(value.get("name"), str):
        return {"type": "function", "name": value["name"]}
    raise ProtocolError("invalid_value",
                        f"Invalid '{param}': expected 'auto', 'none', 'required' or "
                        f"{{\"type\": \"function\", \"name\": ...}}.", param)


def _number(value: Any, param: str, lo: float, hi: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError("invalid_value",
                            f"Invalid '{param}': expected a number between {lo} and {hi}.",
                            param)
    return value


def _ms(value: Any, param: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10000:
        raise ProtocolError("invalid_value",
                            f"Invalid '{param}': expected milliseconds between 0 and 10000.",
                            param)
    return value


def _turn_detection(value: Any, current: dict[str, Any] | None,
                    cfg: EngineConfig) -> dict[str, Any] | None:
    param = "session.audio.input.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("invalid_type", f"'{param}' must be an object or null.", param)
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError("invalid_value",
                            f"Invalid '{param}.type': expected 'server_vad' or "
                            f"'semantic_vad'.", param + ".type")
    base = current if current and current.get("type") == kind else None
    td: dict[str, Any] = {"type": kind}
    if kind == "server_vad":
        td["threshold"] = _number(value.get("threshold", base["threshold"] if base else
                                            cfg.vad_threshold), param + ".threshold", 0.0, 1.0)
        td["prefix_padding_ms"] = _ms(value.get("prefix_padding_ms",
                                                base["prefix_padding_ms"] if base
                                                else cfg.prefix_padding_ms),
                                      param + ".prefix_padding_ms")
        td["silence_duration_ms"] = _ms(value.get("silence_duration_ms",
                                                  base["silence_duration_ms"] if base
                                                  else cfg.silence_duration_ms),
                                        param + ".silence_duration_ms")
        idle = value.get("idle_timeout_ms", base.get("idle_timeout_ms") if base else None)
        td["idle_timeout_ms"] = idle if isinstance(idle, int) else None
    else:
        eag = value.get("eagerness", base.get("eagerness") if base else "auto")
        if eag not in ("low", "medium", "high", "auto"):
            raise ProtocolError("invalid_value", f"Invalid '{param}.eagerness'.",
                                param + ".eagerness")
        td["eagerness"] = eag
    for flag in ("create_response", "interrupt_response"):
        v = value.get(flag, base.get(flag, True) if base else True)
        if not isinstance(v, bool):
            raise ProtocolError("invalid_type", f"'{param}.{flag}' must be a boolean.",
                                f"{param}.{flag}")
        td[flag] = v
    return td


def apply_session_update(current: dict[str, Any], upd: Any,
                         cfg: EngineConfig) -> dict[str, Any]:
    """The session after ``upd``; raises :class:`ProtocolError` (nothing applied)."""
    if not isinstance(upd, dict):
        raise ProtocolError("missing_required_parameter",
                            "Missing required parameter: 'session'.", "session")
    kind = upd.get("type")
    if kind is None:
        raise ProtocolError("missing_required_parameter",
                            "Missing required parameter: 'session.type'.", "session.type")
    if kind == "transcription":
        raise ProtocolError("invalid_value",
                            "Passing a transcription session update event to a realtime "
                            "session is not allowed.", "session.type")
    if kind != "realtime":
        raise ProtocolError("invalid_value",
                            "Invalid value for 'session.type': expected 'realtime'.",
                            "session.type")
    s = copy.deepcopy(current)
    _apply_common(upd, s, "session")
    for passthrough in ("tracing", "truncation", "prompt", "include"):
        if passthrough in upd:
            s[passthrough] = upd[passthrough]
    audio = upd.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise ProtocolError("invalid_type", "'session.audio' must be an object.",
                                "session.audio")
        ain = audio.get("input")
        if ain is not None:
            if not isinstance(ain, dict):
                raise ProtocolError("invalid_type", "'session.audio.input' must be an object.",
                                    "session.audio.input")
            si = s["audio"]["input"]
            if "format" in ain:
                si["format"] = _format(ain["format"], "session.audio.input.format")
            if "transcription" in ain:
                tr = ain["transcription"]
                if tr is not None and not isinstance(tr, dict):
                    raise ProtocolError("invalid_type",
                                        "'session.audio.input.transcription' must be an "
                                        "object or null.", "session.audio.input.transcription")
                si["transcription"] = None if tr is None else {
                    "model": tr.get("model") or "whisper-1",
                    **{k: tr[k] for k in ("language", "prompt") if k in tr}}
            if "noise_reduction" in ain:
                si["noise_reduction"] = ain["noise_reduction"]
            if "turn_detection" in ain:
                si["turn_detection"] = _turn_detection(ain["turn_detection"],
                                                       si.get("turn_detection"), cfg)
        aout = audio.get("output")
        if aout is not None:
            if not isinstance(aout, dict):
                raise ProtocolError("invalid_type",
                                    "'session.audio.output' must be an object.",
                                    "session.audio.output")
            so = s["audio"]["output"]
            if "format" in aout:
                so["format"] = _format(aout["format"], "session.audio.output.format")
            if "voice" in aout:
                v = aout["voice"]
                if not (isinstance(v, str) or (isinstance(v, dict) and "id" in v)):
                    raise ProtocolError("invalid_value", "Invalid 'session.audio.output.voice'.",
                                        "session.audio.output.voice")
                so["voice"] = v
            if "speed" in aout:
                so["speed"] = _number(aout["speed"], "session.audio.output.speed", 0.25, 1.5)
    return s


def response_params(session: dict[str, Any], req: Any) -> dict[str, Any]:
    """Effective parameters of one ``response.create`` (session defaults +
    the request's overrides)."""
    if req is None:
        req = {}
    if not isinstance(req, dict):
        raise ProtocolError("invalid_type", "'response' must be an object.", "response")
    p: dict[str, Any] = {
        "output_modalities": list(session["output_modalities"]),
        "instructions": session["instructions"],
        "tools": session["tools"],
        "tool_choice": session["tool_choice"],
        "max_output_tokens": session["max_output_tokens"],
        "format": session["audio"]["output"]["format"],
        "voice": session["audio"]["output"]["voice"],
        "speed": session["audio"]["output"].get("speed", 1.0),
        "conversation": "auto",
        "metadata": None,
        "input": None,
    }
    _apply_common(req, p, "response")
    out = (req.get("audio") or {}).get("output") if isinstance(req.get("audio"), dict) else None
    if isinstance(out, dict):
        if "format" in out:
            p["format"] = _format(out["format"], "response.audio.output.format")
        if "voice" in out:
            p["voice"] = out["voice"]
    conv = req.get("conversation", "auto")
    if conv is None:
        conv = "auto"
    if conv not in ("auto", "none"):
        raise ProtocolError("invalid_value",
                            "Invalid 'response.conversation': expected 'auto' or 'none'.",
                            "response.conversation")
    p["conversation"] = conv
    md = req.get("metadata")
    if md is not None and not isinstance(md, dict):
        raise ProtocolError("invalid_type", "'response.metadata' must be an object.",
                            "response.metadata")
    p["metadata"] = md
    if "input" in req:
        if not isinstance(req["input"], list):
            raise ProtocolError("invalid_type", "'response.input' must be an array.",
                                "response.input")
        p["input"] = req["input"]
    return p
