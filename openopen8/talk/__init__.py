"""``openopen8 talk``: hold a voice conversation through the gateway, from a
file, a text turn or the microphone, with live captions and a summary."""

from .options import DEFAULT_MODEL, DEFAULT_URL, TalkOptions, UsageError, build
from .runner import talk

__all__ = ["DEFAULT_MODEL", "DEFAULT_URL", "TalkOptions", "UsageError", "build", "talk"]
