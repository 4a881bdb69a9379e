"""Azure OpenAI: the GA ``/openai/v1/realtime?model=<deployment>`` endpoint,
or the (deprecated) preview ``/openai/realtime?api-version=…&deployment=…``
when the channel names an api-version -- that one speaks the beta dialect."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from ..relay.endpoint import Endpoint
from .base import ConnectRequest
from .ws import open_ws


def azure_url(endpoint: str, deployment: str, api_version: str | None) -> str:
    parts = urlsplit(endpoint)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme, "wss")
    root = parts.path.rstrip("/")
    if api_version:
        path, query = root + "/openai/realtime", {"api-version": api_version, "deployment": deployment}
    else:
        path, query = root + "/openai/v1/realtime", {"model": deployment}
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


class AzureProvider:
    def __init__(self, endpoint: str, key: str,
                 deployments: dict[str, str], api_version: str | None = None,
                 timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self._key = key
        self.deployments = deployments
        self.api_version = api_version
        self.dialect = "beta" if api_version else "ga"
        self.timeout = timeout

    async def connect(self, req: ConnectRequest) -> Endpoint:
        deployment = self.deployments.get(req.model, req.model)
        url = azure_url(self.endpoint, deployment, self.api_version)
        return await open_ws(url, {"api-key": self._key}, self.timeout)
