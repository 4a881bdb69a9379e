"""Prometheus metrics.  Updated per session and per refusal, never per frame:
frame and byte counts are added once, when a session ends."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

SESSIONS_ACTIVE = Gauge("openopen8_sessions_active", "Realtime sessions now open", registry=REGISTRY)
SESSIONS = Counter("openopen8_sessions_total", "Realtime sessions ended",
                   ["model", "channel", "closed_by", "code"], registry=REGISTRY)
REFUSALS = Counter("openopen8_refusals_total", "Connections refused before the upgrade",
                   ["status", "code"], registry=REGISTRY)
UPSTREAM_FAILURES = Counter("openopen8_upstream_failures_total",
                            "Upstream handshakes that failed (the next channel was tried)",
                            ["channel", "kind"], registry=REGISTRY)
EVENTS = Counter("openopen8_events_total", "Events relayed", ["direction"], registry=REGISTRY)
BYTES = Counter("openopen8_bytes_total", "Event bytes relayed", ["direction"], registry=REGISTRY)
USAGE_TOKENS = Counter("openopen8_usage_tokens_total",
                       "Tokens reported by upstreams in response.done / transcription usage",
                       ["model", "kind"], registry=REGISTRY)
COST = Counter("openopen8_cost_usd_total", "Priced usage in USD", ["model", "fallback"],
               registry=REGISTRY)
SESSION_SECONDS = Histogram("openopen8_session_seconds", "Session length",
                            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200), registry=REGISTRY)
CONNECT_SECONDS = Histogram("openopen8_upstream_connect_seconds",
                            "Time to open an upstream session (handshake and first frame)",
                            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)


def session_ended(s, outcome, seconds: float) -> None:
    SESSIONS.labels(s.model, getattr(s.channel, "name", "?"), outcome.closed_by,
                    str(outcome.client_code)).inc()
    EVENTS.labels("client_to_upstream").inc(s.events_in)
    EVENTS.labels("upstream_to_client").inc(s.events_out)
    BYTES.labels("client_to_upstream").inc(s.bytes_in)
    BYTES.labels("upstream_to_client").inc(s.bytes_out)
    SESSION_SECONDS.observe(seconds)


_TOKEN_KINDS = ("input_text", "input_audio", "input_image", "cached_text", "cached_audio",
                "output_text", "output_audio")


def usage_recorded(row) -> None:
    """Once per ledger row (the metering stage drops in-session duplicates)."""
    t = row.tokens
    for kind in _TOKEN_KINDS:
        n = getattr(t, kind)
        if n:
            USAGE_TOKENS.labels(row.model, kind).inc(n)
    if row.cost_nanos:
        COST.labels(row.model, "yes" if row.fallback else "no").inc(row.cost_nanos / 1e9)


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
