"""Gateway tokens: minting, hashing, and finding the one a request carries."""

from __future__ import annotations

import hashlib
import secrets
from typing import Mapping

SECRET_PREFIX = "oo8_"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Only this hash is stored.  A lookup by the hash of the whole secret
    reveals nothing about a near miss, so lookups are constant-time in what
    matters (no per-character comparison of secrets)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:10]


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    raw = headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def find_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The credential a client sent, by precedence: ``Authorization: Bearer``,
    ``api-key`` header, the browser subprotocol, ``?token=`` (also ``?api-key=``
    as Azure clients send it).  A subprotocol never overrides a header."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        tok = auth[7:].strip()
        if tok:
            return tok
    tok = headers.get("api-key", "").strip()
    if tok:
        return tok
    for proto in offered_subprotocols(headers):
        if proto.startswith(KEY_SUBPROTOCOL):
            tok = proto[len(KEY_SUBPROTOCOL):]
            if tok:
                return tok
    for name in ("token", "api-key"):
        tok = query.get(name, "").strip()
        if tok:
            return tok
    return None


def wants_beta(headers: Mapping[str, str]) -> bool:
    if "realtime=v1" in headers.get("OpenAI-Beta", "").replace(" ", ""):
        return True
    return BETA_SUBPROTOCOL in offered_subprotocols(headers)
