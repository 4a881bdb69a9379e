"""What an operator pins for a token's sessions, and how a GA session or
response is held to it.  Pure functions; the policy stage
(``stages/policy.py``) applies them to every ``session.update`` and
``response.create``, and minting a client secret applies them to the
secret's session.

A policy is a small dict kept on the token (``tokens.policy``):

* ``instructions`` + ``instructions_mode``: ``fixed`` (the upstream always
  gets the operator's text) or ``prefix`` (operator's text, a blank line,
  then the client's); the client never sees the operator's text;
* ``voices``: the voices allowed (the first is the default);
* ``max_output_tokens``: a cap per response;
* ``tools``: ``"none"``, ``"any"`` or a list of function tools (by name; the
  upstream gets the operator's definition);
* ``modalities``: output modalities allowed (``audio``, ``text``);
* ``transcription_model``: the input transcription model.

:func:`hold_session` / :func:`hold_response` return the value to forward
and a list of :class:`Breach` es (the ``param`` the client broke and what
it got instead); the session goes on with the allowed value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

FIELDS = ("instructions", "instructions_mode", "voices", "max_output_tokens", "tools",
          "modalities", "transcription_model")
MODES = ("fixed", "prefix")
MODALITIES = ("audio", "text")


class PolicyError(ValueError):
    """A policy as an operator wrote it cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Breach:
    param: str       # where the client's value was, e.g. "session.audio.output.voice"
    message: str


def normalize(raw: dict[str, Any] | None) -> dict[str, Any]:
    """A policy checked and in its stored form (unset fields left out).
    Raises :class:`PolicyError` naming the field."""
    out: dict[str, Any] = {}
    if not raw:
        return out
    if not isinstance(raw, dict):
        raise PolicyError("policy", "the policy must be an object")
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise PolicyError(sorted(unknown)[0], f"unknown policy field {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(FIELDS)})")
    instr = raw.get("instructions")
    if instr is not None:
        if not isinstance(instr, str) or not instr.strip():
            raise PolicyError("instructions", "instructions must be a non-empty string")
        out["instructions"] = instr
        mode = raw.get("instructions_mode") or "prefix"
        if mode not in MODES:
            raise PolicyError("instructions_mode", "instructions_mode must be fixed or prefix")
        out["instructions_mode"] = mode
    elif raw.get("instructions_mode") is not None:
        raise PolicyError("instructions_mode", "instructions_mode needs instructions")
    voices = raw.get("voices")
    if voices is not None:
        if (not isinstance(voices, list) or not voices
                or not all(isinstance(v, str) and v for v in voices)):
            raise PolicyError("voices", "voices must be a non-empty list of voice names")
        out["voices"] = list(dict.fromkeys(voices))
    cap = raw.get("max_output_tokens")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 4096:
            raise PolicyError("max_output_tokens", "max_output_tokens must be 1..4096")
        out["max_output_tokens"] = cap
    tools = raw.get("tools")
    if tools is not None:
        if tools in ("none", "any"):
            out["tools"] = tools
        elif isinstance(tools, list) and all(_tool_name(t) for t in tools):
            out["tools"] = [dict(t, type="function") for t in tools]
        else:
            raise PolicyError("tools", "tools must be 'none', 'any' or a list of function "
                              "tools, each with a name")
    mods = raw.get("modalities")
    if mods is not None:
        if (not isinstance(mods, list) or not mods
                or not all(m in MODALITIES for m in mods)):
            raise PolicyError("modalities", "modalities must be a list of audio, text")
        out["modalities"] = list(dict.fromkeys(mods))
    tm = raw.get("transcription_model")
    if tm is not None:
        if not isinstance(tm, str) or not tm:
            raise PolicyError("transcription_model", "transcription_model must be a model name")
        out["transcription_model"] = tm
    return out


def _tool_name(t: Any) -> str | None:
    if not isinstance(t, dict) or t.get("type", "function") != "function":
        return None
    name = t.get("name")
    return name if isinstance(name, str) and name else None


def sub(d: dict[str, Any], *path: str) -> dict[str, Any] | None:
    """``d[path[0]][path[1]]…`` when every step is a dict, else None."""
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None   # type: ignore[assignment]
    return d if isinstance(d, dict) else None


def _owned(d: dict[str, Any], *path: str) -> dict[str, Any]:
    """The dict at ``path`` in ``d`` (dicts all the way), each step replaced
    by a shallow copy of its own, so a change there leaves the original be."""
    for key in path:
        nxt = dict(d[key])
        d[key] = nxt
        d = nxt
    return d


def _ensure(d: dict[str, Any], *path: str) -> dict[str, Any]:
    for key in path:
        nxt = d.get(key)
        if not isinstance(nxt, dict):
            nxt = d[key] = {}
        d = nxt
    return d


def instructions_for(policy: dict[str, Any], client: str) -> str:
    """What the upstream gets when the client asks for ``client``."""
    mine = policy["instructions"]
    if policy.get("instructions_mode") == "fixed" or not client:
        return mine
    return f"{mine}\n\n{client}"


def hold_session(policy: dict[str, Any], sess: dict[str, Any], where: str = "session",
                 voice: str | None = None) -> tuple[dict[str, Any], list[Breach]]:
    """A GA session (of a ``session.update``, or a response's parameters
    with ``where="response"``) held to ``policy``: a copy to forward, and
    the breaches.  ``voice``: the allowed voice in use, kept when the client
    asks for another (default: the policy's first)."""
    out = dict(sess)          # copied along the paths changed (clients may nest deeply)
    breaches: list[Breach] = []
    if not policy:
        return out, breaches
    if "instructions" in policy and "instructions" in out and out.get("type") != "transcription":
        asked = out["instructions"] if isinstance(out["instructions"], str) else ""
        if policy.get("instructions_mode") == "fixed" and asked:
            breaches.append(Breach(f"{where}.instructions",
                                   "This gateway token's instructions are fixed by its "
                                   "administrator; yours were not used."))
        out["instructions"] = instructions_for(policy, asked)
    voices = policy.get("voices")
    if voices:
        outd = sub(out, "audio", "output")
        asked = outd.get("voice") if outd is not None else None
        if asked is not None and asked not in voices:
            keep = voice if voice in voices else voices[0]
            breaches.append(Breach(f"{where}.audio.output.voice",
                                   f"This gateway token may use the voices {', '.join(voices)};"
                                   f" {keep!s} is used instead of {str(asked)[:40]!r}."))
            _owned(out, "audio", "output")["voice"] = keep
    cap = policy.get("max_output_tokens")
    if cap is not None:
        asked = out.get("max_output_tokens")
        over = asked == "inf" or (isinstance(asked, (int, float)) and not isinstance(asked, bool)
                                  and asked > cap)
        if over:
            breaches.append(Breach(f"{where}.max_output_tokens",
                                   f"This gateway token allows at most {cap} output tokens "
                                   "per response; the cap is used."))
        if over or where == "session" and asked is not None and not isinstance(asked, int):
            out["max_output_tokens"] = cap
    tools = policy.get("tools")
    if tools is not None and tools != "any" and "tools" in out:
        asked = out["tools"] if isinstance(out["tools"], list) else []
        allowed = {} if tools == "none" else {t["name"]: t for t in tools}
        kept, refused = [], []
        for t in asked:
            name = _tool_name(t)
            if name is not None and name in allowed:
                kept.append(copy.deepcopy(allowed[name]))
            else:
                refused.append(str(name or (t.get("type") if isinstance(t, dict) else "?")))
        if refused:
            which = "no tools" if tools == "none" else "only the tools " + ", ".join(allowed)
            breaches.append(Breach(f"{where}.tools",
                                   f"This gateway token may use {which}; not used: "
                                   f"{', '.join(r[:40] for r in refused)}."))
        out["tools"] = kept
    mods = policy.get("modalities")
    if mods is not None and "output_modalities" in out:
        asked = out["output_modalities"]
        bad = [m for m in asked if m not in mods] if isinstance(asked, list) else ["?"]
        if bad:
            breaches.append(Breach(f"{where}.output_modalities",
                                   f"This gateway token may answer in {', '.join(mods)} only."))
            out["output_modalities"] = [mods[0]]
    tm = policy.get("transcription_model")
    if tm is not None:
        trans = sub(out, "audio", "input", "transcription")
        if trans is not None and trans.get("model") != tm:
            if trans.get("model") is not None:
                breaches.append(Breach(f"{where}.audio.input.transcription.model",
                                       f"This gateway token transcribes with {tm} only."))
            _owned(out, "audio", "input", "transcription")["model"] = tm
    return out, breaches


def opening(policy: dict[str, Any], session_type: str = "realtime") -> dict[str, Any] | None:
    """The GA session the upstream starts with under ``policy`` (None when
    nothing must be set before the client speaks): the instructions, the
    default voice, the output cap and the allowed modality."""
    if session_type == "transcription":
        return None
    sess: dict[str, Any] = {}
    if "instructions" in policy:
        sess["instructions"] = ""
    if policy.get("voices"):
        _ensure(sess, "audio", "output")["voice"] = policy["voices"][0]
    if policy.get("max_output_tokens") is not None:
        sess["max_output_tokens"] = policy["max_output_tokens"]
    mods = policy.get("modalities")
    if mods is not None and "audio" not in mods:
        sess["output_modalities"] = ["text"]
    if not sess:
        return None
    return {"type": "realtime", **sess}


def describe(policy: dict[str, Any]) -> str:
    """One line for ``tokens list``."""
    parts = []
    if "instructions" in policy:
        parts.append(f"instructions:{policy.get('instructions_mode', 'prefix')}")
    if policy.get("voices"):
        parts.append("voices:" + ",".join(policy["voices"]))
    if policy.get("max_output_tokens") is not None:
        parts.append(f"max_output_tokens:{policy['max_output_tokens']}")
    if "tools" in policy:
        t = policy["tools"]
        parts.append("tools:" + (t if isinstance(t, str) else ",".join(x["name"] for x in t)))
    if policy.get("modalities"):
        parts.append("modalities:" + ",".join(policy["modalities"]))
    if policy.get("transcription_model"):
        parts.append("transcription:" + policy["transcription_model"])
    return " ".join(parts)
