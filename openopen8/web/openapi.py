"""The admin API's request bodies (pydantic: they validate, and their JSON
schemas are the OpenAPI document's components) and the document itself,
``GET /admin/openapi.json``."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

Limit = Optional[Union[float, str]]   # a number, or "none" for no limit


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _TokenFields(_Body):
    models: Optional[list[str]] = Field(None, description="Models the token may use (empty: all).")
    expires: Optional[str] = Field(None, description="Last valid day, YYYY-MM-DD (UTC) or ISO "
                                   "timestamp; 'none' on update: never.")
    quota_usd: Limit = Field(None, description="Total spend allowed in USD ('none': no limit).")
    max_sessions: Limit = Field(None, description="Sessions at once.")
    max_duration: Limit = Field(None, description="Seconds per session.")
    idle_timeout: Limit = Field(None, description="Seconds without a client event.")
    sessions_per_minute: Limit = Field(None, description="New sessions per minute.")
    policy: Optional[dict[str, Any]] = Field(None, description="What the gateway pins for the "
                                             "token's sessions (instructions, voices, tools ...).")
    origins: Optional[list[str]] = Field(None, description="Browser origins allowed (empty: any).")
    log_transcripts: Optional[bool] = Field(None, description="Keep the session log (null: the "
                                            "gateway's setting).")

    def limits(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("quota_usd", "max_sessions", "max_duration",
                                              "idle_timeout", "sessions_per_minute")}


class TokenCreate(_TokenFields):
    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")


class TokenUpdate(_TokenFields):
    """``policy`` fields are merged into the token's policy (a null value
    drops that field); ``clear_policy`` starts from none."""

    clear_policy: bool = False


class ChannelCreate(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    type: Literal["openai", "azure", "local"]
    models: list[str] = Field(min_length=1)
    key: Optional[str] = Field(None, description="Upstream API key (stored encrypted, never shown).")
    base_url: Optional[str] = Field(None, description="OpenAI base URL (default api.openai.com).")
    endpoint: Optional[str] = Field(None, description="Azure endpoint.")
    deployments: dict[str, str] = Field(default_factory=dict)
    api_version: Optional[str] = None
    priority: int = 0
    weight: int = Field(1, ge=1)


class ChannelUpdate(_Body):
    priority: Optional[int] = None
    weight: Optional[int] = Field(None, ge=1)
    models: Optional[list[str]] = Field(None, min_length=1)
    key: Optional[str] = Field(None, min_length=1, description="A new key (rotation).")
    base_url: Optional[str] = None
    deployments: Optional[dict[str, str]] = None
    api_version: Optional[str] = None
    enabled: Optional[bool] = None


class ChannelTest(_Body):
    model: Optional[str] = Field(None, description="The model to open (default: the first).")


BODIES = (TokenCreate, TokenUpdate, ChannelCreate, ChannelUpdate, ChannelTest)


def _op(summary: str, body: type | None = None, params: list[dict] | None = None,
        status: str = "200", content: str = "application/json") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            status: {"description": "OK", "content": {content: {}}},
            "400": {"$ref": "#/components/responses/Invalid"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}}
    if params:
        op["parameters"] = params
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str, type: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": type}}


_USAGE_Q = [_query("by", "day | model | token | channel"), _query("token", "token name"),
            _query("model", "model"), _query("since", "YYYY-MM-DD (included)"),
            _query("until", "YYYY-MM-DD (included)")]


def document() -> dict[str, Any]:
    schemas = {m.__name__: m.model_json_schema(ref_template="#/components/schemas/{model}")
               for m in BODIES}
    name, sid = [_path("name")], [_path("id")]
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"], "description": "the field at fault"},
        "code": {"type": "string"}}}}}
    schemas["Error"] = error
    return {
        "openapi": "3.1.0",
        "info": {"title": "openopen8 admin API", "version": "1",
                 "description": "Everything the openopen8 CLI does, over HTTP. Send "
                                "'Authorization: Bearer ADMIN_TOKEN'."},
        "security": [{"admin": []}],
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "responses": {
                "Invalid": {"description": "A field is wrong: error.param names it.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unauthorized": {"description": "No or a wrong admin token.",
                                 "content": {"application/json": {
                                     "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        },
        "paths": {
            "/admin/openapi.json": {"get": _op("This document.")},
            "/admin/overview": {"get": _op("Live sessions, today, 7 days, channels.")},
            "/admin/usage": {"get": _op("Usage report (format=csv for CSV).", params=[
                *_USAGE_Q, _query("format", "json | csv")])},
            "/admin/usage.csv": {"get": _op("Usage report as CSV.", params=_USAGE_Q,
                                            content="text/csv")},
            "/admin/tokens": {
                "get": _op("Tokens with limits, policy, spend and last use (never secrets)."),
                "post": _op("Create a token; the secret is in this response only.",
                            TokenCreate, status="201")},
            "/admin/tokens/{name}": {
                "get": _op("One token.", params=name),
                "patch": _op("Change limits, policy, models, expiry.", TokenUpdate,
                             params=name),
                "delete": _op("Delete a token (no open sessions; its usage stays).",
                              params=name)},
            "/admin/tokens/{name}/revoke": {"post": _op("Revoke a token (ends its sessions).",
                                                        params=name)},
            "/admin/channels": {
                "get": _op("Channels (never keys)."),
                "post": _op("Add a channel.", ChannelCreate, status="201")},
            "/admin/channels/{name}": {
                "patch": _op("Priority, weight, models, key rotation, URL.", ChannelUpdate,
                             params=name),
                "delete": _op("Remove a channel.", params=name)},
            "/admin/channels/{name}/enable": {"post": _op("Route sessions to it.", params=name)},
            "/admin/channels/{name}/disable": {"post": _op("Stop routing to it.", params=name)},
            "/admin/channels/{name}/test": {"post": _op(
                "A real handshake: session.created, or the failure class, and the time.",
                ChannelTest, params=name)},
            "/admin/sessions": {"get": _op("Past and open sessions, newest first.", params=[
                _query("state", "all | open | closed"), _query("token", "token name"),
                _query("model", "model"), _query("channel", "channel"),
                _query("close_code", "close code", "integer"),
                _query("since", "opened on or after (YYYY-MM-DD or ISO)"),
                _query("until", "opened before the end of (YYYY-MM-DD or ISO)"),
                _query("limit", "page size (1-500, default 50)", "integer"),
                _query("offset", "rows to skip", "integer")])},
            "/admin/sessions/live": {"get": _op(
                "Sessions running on this instance: events, audio seconds, spend so far.")},
            "/admin/sessions/{id}": {
                "get": _op("One session: counters, ledger rows, its turns (if logged).",
                           params=sid),
                "delete": _op("End a live session (error + close 1008, usage settled).",
                              params=sid, status="202")},
        },
    }
