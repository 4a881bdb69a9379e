"""The built-in local channel, as ``openopen8 channels list`` shows it.

A server offers its local engine as model ``openopen8-local`` when the
``local_engine`` setting is on and no stored channel lists that model
(:meth:`Router.serving` decides, and is asked here, so the listing cannot
disagree with the router).  That channel is no row in the store, so the
listing adds it, marked built-in, with the state of its models.

The CLI runs in its own process, where no engine is loaded.  A server
answering on the configured host and port says whether its engine is loaded
(``/healthz``'s ``local_engine``: ``loading`` or ``ready``); without one the
CLI can only say whether the models are installed and verified
(:mod:`openopen8.engine.installed`).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from .crypto import SecretBox
from .providers.routing import LOCAL_MODEL, Router
from .settings import Settings
from .store.base import ChannelRecord

#: what a server's ``local_engine`` says -> the listing's word for it
_SERVER_STATES = {"ready": "loaded", "loading": "loading"}
#: how long to wait for a server's /healthz
PROBE_SECONDS = 1.0


async def builtin_channel(settings: Settings, store: Any, box: SecretBox) -> ChannelRecord | None:
    """The built-in channel a server with these settings would route
    ``openopen8-local`` to, or None (``local_engine = false``, the engine not
    installable, or a stored channel lists the model)."""
    from .gateway import local_factory
    router = Router(store, box, local_factory=local_factory(settings))
    enabled, _ = await router.serving(LOCAL_MODEL)
    # the router makes the built-in record on the fly: id 0, never a store id
    return next((c for c in enabled if c.id == 0), None)


def healthz_url(settings: Settings) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if settings.tls_cert else 'http'}://{host}:{settings.port}/healthz"


def server_engine_state(settings: Settings) -> str | None:
    """``local_engine`` from the /healthz of a server on the configured host
    and port, or None (no server answers, or it does not say)."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})]   # never ask a proxy about localhost
    if settings.tls_cert:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False              # only reads health; sends nothing
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    try:
        try:
            with opener.open(healthz_url(settings), timeout=PROBE_SECONDS) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # e.g. 503 while starting: the body still says
            with exc:
                body = json.load(exc)
    except (OSError, ValueError):
        return None
    state = body.get("local_engine") if isinstance(body, dict) else None
    return state if isinstance(state, str) and state else None


def builtin_view(settings: Settings, ch: ChannelRecord) -> dict[str, Any]:
    """The listing's row for the built-in channel (``channel_view``'s keys,
    plus ``builtin`` and the models' state)."""
    from .engine import installed
    from .ops import channel_view
    view = {**channel_view(ch), "builtin": True}
    state = server_engine_state(settings)
    try:
        parts = installed.check(settings.local, verify=state is None)
    except ValueError as exc:            # a bad [local] setting: the server would fail too
        parts, problems, missing = [], [f"[local] settings: {exc}"], "misconfigured"
    else:
        problems = [f"{p.part} ({p.model}): {p.problem}" for p in parts if p.problem]
        missing = "not installed"
    if state is not None:
        view.update(models_state=_SERVER_STATES.get(state, state),
                    models_state_from=healthz_url(settings), problems=[])
    else:
        view.update(models_state=missing if problems else "installed",
                    models_state_from="files", problems=problems)
    view["parts"] = [{"part": p.part, "model": p.model} for p in parts]
    return view
