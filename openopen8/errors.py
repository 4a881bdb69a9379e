"""Gateway errors.  Each knows its HTTP status (refusals before the upgrade),
its OpenAI-style error body and the close code to use once a session runs."""

from __future__ import annotations

from typing import Any

from .events import Event, error_event

NO_CHANNEL_MESSAGE = (
    "Realtime requires a channel configured with a Realtime-capable provider "
    "(OpenAI or Azure OpenAI). Contact your OpenOpen8 administrator if the "
    "WebSocket connection is rejected."
)


class GatewayError(Exception):
    status = 400
    type = "invalid_request_error"
    code: str | None = None
    close_code = 1008

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 param: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: extra response headers of the refusal (e.g. 426's ``Sec-WebSocket-Version``)
        self.headers = headers
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def event(self) -> Event:
        return error_event(self.message, code=self.code, type=self.type, param=self.param)


class AuthError(GatewayError):
    status = 401
    code = "invalid_api_key"


class ForbiddenError(GatewayError):
    status = 403
    code = "model_not_allowed"


class LimitError(GatewayError):
    """Quota, concurrency or rate limit: 429 before the upgrade, 1013 after."""

    status = 429
    code = "rate_limit_exceeded"
    close_code = 1013


class NoChannelError(GatewayError):
    status = 404
    code = "model_not_found"


class UpstreamFailure(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_error"
    close_code = 1014
