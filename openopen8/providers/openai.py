"""OpenAI (and anything that speaks its GA Realtime API at a base URL)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

from ..relay.endpoint import Endpoint
from .base import ConnectRequest
from .ws import open_ws

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def realtime_url(base_url: str, model: str) -> str:
    """The WebSocket URL the official SDK would use for ``base_url``:
    http->ws, https->wss, path + "/realtime", base query kept, model added."""
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme, "wss")
    query = parse_qsl(parts.query, keep_blank_values=True) + [("model", model)]
    path = parts.path.rstrip("/") + "/realtime"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


class OpenAIProvider:
    dialect = "ga"

    def __init__(self, base_url: str, key: str,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url or DEFAULT_BASE_URL
        self._key = key
        self.timeout = timeout

    async def connect(self, req: ConnectRequest) -> Endpoint:
        # GA only: never the OpenAI-Beta header (OpenAI closes 4000 on it)
        headers = {"Authorization": f"Bearer {self._key}"}
        return await open_ws(realtime_url(self.base_url, req.model), headers, self.timeout)
