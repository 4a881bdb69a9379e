"""One settings model.  Sources, strongest first: command-line flags,
``OPENOPEN8_*`` environment variables, a TOML file, defaults.

The TOML file is ``--config FILE`` / ``OPENOPEN8_CONFIG``, else
``<data dir>/openopen8.toml`` when it exists.  Keys are the field names below
(``port = 8080``, ``[prices."my-model"]``, ``[local]`` …).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME")
    return (Path(base) if base else Path.home() / ".local" / "share") / "openopen8"


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field, field_name):  # pragma: no cover - unused
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENOPEN8_", extra="ignore",
                                      env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default_factory=default_data_dir)
    #: ``sqlite:///path`` or ``postgresql://user@host/db``; default: SQLite in data_dir
    database_url: str | None = None
    #: encrypts upstream keys at rest; default: a random key kept in data_dir/secret.key.
    #: Several gateway instances on one database must share it.
    secret_key: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: dialect assumed for a client that neither sends the beta header nor a
    #: beta-shaped first session.update: "ga" or "beta"
    default_dialect: str = "ga"
    #: seconds to wait for an upstream handshake (and its first frame)
    connect_timeout: float = 10.0
    #: how often a running server re-reads channels from the store
    refresh_seconds: float = 2.0
    #: ping idle clients this often (seconds); 0 disables
    heartbeat: float = 20.0
    #: offer the built-in local engine as the channel for `openopen8-local`
    #: when no channel in the store serves that model
    local_engine: bool = True
    #: local engine options (backends, model choices); see openopen8/engine
    local: dict[str, Any] = Field(default_factory=dict)
    log_level: str = "INFO"
    #: prices in USD per 1M tokens over the shipped ones (openopen8/billing.py):
    #: ``[prices."gpt-realtime"]`` with text_in, cached_text_in, audio_in,
    #: cached_audio_in, image_in, cached_image_in, text_out, audio_out, per_minute
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: the price of a model that has none (rows priced by it are flagged);
    #: unset classes: the dearest shipped realtime rates
    fallback_price: dict[str, float] = Field(default_factory=dict)
    #: bearer secret for the admin API (/admin/*); unset: the admin API refuses everything
    admin_token: SecretStr | None = None
    #: keep each session's turns (input transcriptions, assistant transcripts and text,
    #: tool calls and results; never audio) for the console; a token's own
    #: ``log_transcripts`` overrides this.  Off by default
    log_transcripts: bool = False
    #: logged turns older than this many days are deleted (hourly); 0: kept forever
    log_retention_days: float = Field(default=30.0, ge=0)
    #: how often the ledger's writer wakes for its periodic flush (and retries a failed write)
    ledger_flush_seconds: float = 1.0
    #: a usage row or session end is committed at most this long after it was recorded
    #: (a group commit: what comes meanwhile shares the transaction); the crash loss window
    ledger_commit_seconds: float = 0.05
    #: a session's row counts against max_sessions until its lease runs out
    #: (renewed every lease_seconds/3 by the instance running it)
    lease_seconds: float = 30.0
    #: how often running sessions re-read their token's spend (other instances, CLI changes)
    balance_refresh_seconds: float = 2.0
    #: how often time limits (duration, idle, quota estimates) are checked
    tick_seconds: float = 1.0
    #: after the client is gone, how long to wait for a response in flight to report its usage
    settle_seconds: float = 2.0
    #: on the first SIGTERM/SIGINT: new Realtime sessions get 503 + Retry-After (a proxy
    #: retries another instance), running ones go on this long, then get 1012; 0: at once
    drain_seconds: float = Field(default=30.0, ge=0)
    #: reverse proxies whose ``X-Forwarded-For`` is believed (IPs and CIDRs; in the
    #: environment comma-separated): a request from one is the client's at the
    #: right-most address of the chain that is not a trusted proxy.  Empty: the socket's peer
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: failed authentications (gateway tokens, the admin token) one client address may
    #: make per auth_failure_window_seconds; past it, 429 with Retry-After.  0: no brake
    auth_failure_limit: int = Field(default=10, ge=0)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)

    #: browser origins (``https://app.example.com``; ``*``: any) whose pages may call
    #: /v1/realtime/calls and /v1/realtime/client_secrets (CORS); a token's own
    #: ``origins`` are allowed as well.  In the environment comma-separated
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: WebRTC calls (/v1/realtime/calls): the addresses ICE host candidates are gathered on
    #: (comma-separated); unset: ``host`` -- every interface's when that is a wildcard
    webrtc_host: str | None = None
    #: the UDP ports a call's media may use (both set: that range; 0: any free port)
    webrtc_port_min: int = Field(default=0, ge=0, le=65535)
    webrtc_port_max: int = Field(default=0, ge=0, le=65535)
    #: STUN/TURN servers the gateway's ICE uses: URLs, or ``{urls, username, credential}``.
    #: Empty by default: never a public STUN server unless configured
    webrtc_ice_servers: list[Any] = Field(default_factory=list)
    #: a call not connected (ICE + DTLS) this long after its answer is ended
    webrtc_connect_seconds: float = Field(default=30.0, gt=0)
    #: a call whose microphone sends nothing this long has vanished: ended, usage settled
    webrtc_idle_seconds: float = Field(default=10.0, gt=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in (part.strip() for part in value.split(",")) if v]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in (part.strip() for part in value.split(",")) if v]
        for v in value if isinstance(value, list) else ():
            try:
                ipaddress.ip_network(str(v).strip(), strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {v!r} is not an IP address or CIDR "
                                 "network") from None
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _TomlSource(settings_cls, _pending_toml))

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'openopen8.db'}"


_pending_toml: dict[str, Any] = {}


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``; None values are ignored), the
    environment and a TOML file."""
    global _pending_toml
    flags = {k: v for k, v in overrides.items() if v is not None}
    path = config or os.environ.get("OPENOPEN8_CONFIG")
    if path is None:
        data_dir = flags.get("data_dir") or os.environ.get("OPENOPEN8_DATA_DIR") or default_data_dir()
        candidate = Path(data_dir) / "openopen8.toml"
        path = candidate if candidate.exists() else None
    toml: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            toml = tomllib.load(f)
    _pending_toml = toml
    try:
        return Settings(**flags)
    finally:
        _pending_toml = {}
