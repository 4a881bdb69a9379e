"""Upstream keys are encrypted at rest with the server secret (Fernet:
AES-128-CBC + HMAC-SHA256, from the well-kept ``cryptography`` package)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .datadir import kept_value


class SecretBox:
    def __init__(self, secret: str) -> None:
        key = base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
        self._f = Fernet(key)

    def seal(self, plaintext: str) -> bytes:
        return self._f.encrypt(plaintext.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._f.decrypt(sealed).decode()
        except InvalidToken:
            raise ValueError(
                "cannot decrypt an upstream key: the server secret differs from the one "
                "it was stored with (set OPENOPEN8_SECRET_KEY to the same value everywhere)"
            ) from None


def server_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, else one generated once into data_dir/secret.key."""
    if configured:
        return configured
    return kept_value(Path(data_dir) / "secret.key", lambda: secrets.token_urlsafe(32))
