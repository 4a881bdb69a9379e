"""The upstream of the reliability run: the tests' stand-in for OpenAI, in its own process.

``tests/standin.py`` validates client events the way OpenAI's live service
does and scripts responses that end with usage, which the crash-durability
phase needs (ledger rows) and ``bench/standin.py`` (a fast echo) does not
have.  Three changes for a fuzzing run, both kept here so the tests' double
stays as it is:

* any API key is accepted (the gateway's channel key is made up);
* a session is forgotten once closed (the double keeps every frame it
  received, for tests to inspect);
* an exception while handling a client event (the double is not built for
  ill-typed fields) becomes an ``error`` event with code
  ``standin_exception``, as OpenAI answers, instead of dropping the upstream
  connection: otherwise a session would end because of the double and be
  counted against the gateway.

Every ``error`` this process sends has an ``event_id`` starting with
``event_upstream_``, so the client can tell the upstream's answers from the
gateway's own.

    python bench/edge_upstream.py       # prints "READY <port>" when listening
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.standin import Session, StandIn  # noqa: E402

UPSTREAM_ERROR_PREFIX = "event_upstream_"


async def _error(self: Session, message: str, code: str | None, param: str | None = None,
                 event_id: str | None = None, type: str = "invalid_request_error") -> None:
    await self.send({"type": "error", "event_id": UPSTREAM_ERROR_PREFIX + secrets.token_hex(6),
                     "error": {"type": type, "code": code, "message": message, "param": param,
                               "event_id": event_id}})


_on_text = Session._on_text


async def _robust_on_text(self: Session, text: str) -> None:
    try:
        await _on_text(self, text)
    except Exception as exc:  # noqa: BLE001 - the double's own limits, not the gateway's
        await self.error(f"the stand-in could not handle this event ({type(exc).__name__})",
                         "standin_exception", type="server_error")


_run = Session.run


async def _run_and_forget(self: Session, *args, **kwargs) -> None:
    try:
        await _run(self, *args, **kwargs)
    finally:   # a long fuzzing run would otherwise keep every frame of every session
        if self in self.standin.sessions:
            self.standin.sessions.remove(self)


def patch() -> None:
    """The changes above, applied in this process only (not on import)."""
    Session.error = _error              # type: ignore[method-assign]
    Session._on_text = _robust_on_text  # type: ignore[method-assign]
    Session.run = _run_and_forget       # type: ignore[method-assign]


async def main() -> None:
    patch()
    up = await StandIn(keys=None, models=None, ping_interval=0).start()
    print(f"READY {up.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # pragma: no cover
        pass
