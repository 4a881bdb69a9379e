"""Providers open an upstream endpoint for a channel.

Nothing vendor-specific crosses this module: a provider raises
:class:`UpstreamError` with a failure *class* the router understands and a
message that is safe to show a client (never a key or a full upstream URL
with credentials).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..relay.endpoint import Endpoint


class UpstreamError(Exception):
    """A channel could not be used.  ``kind`` is one of:

    ``unreachable`` (refused, DNS, TLS), ``timeout``, ``auth`` (401/403 or
    OpenAI's close 3000), ``rejected`` (other 4xx or close 4000: the request
    itself was refused), ``unavailable`` (5xx), ``protocol`` (the upstream
    did not speak the Realtime protocol).
    """

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


@dataclass
class ConnectRequest:
    """What the gateway knows when it opens an upstream."""

    model: str
    session_id: str
    client_dialect: str = "ga"
    #: extra query parameters the client sent that the upstream may need
    query: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    #: the Realtime dialect the upstream speaks: "ga" or "beta"
    dialect: str

    async def connect(self, req: ConnectRequest) -> Endpoint:
        """Open the upstream; raise :class:`UpstreamError` on failure."""


def provider_dialect(channel: Any) -> str:
    """The dialect a channel's upstream speaks (Azure preview URLs are beta)."""
    if getattr(channel, "type", None) == "azure" and getattr(channel, "api_version", None):
        return "beta"
    return "ga"
