"""A token's limits while its session runs: quota, duration, idle time.

* **Quota** -- the token's :class:`~openopen8.ledger.TokenBalance` (shared by
  its sessions, kept by the ledger) is read on the events that start, grow or
  end a response and on every tick.  When a settled response used it up, or
  when what is in flight is estimated to overrun what is left, the client gets
  an ``error`` with code ``insufficient_quota``, the responses in flight are
  cancelled upstream (``response.cancel``) and the session closes with 1013.
  The relay then reads the upstream until the cancelled response reports its
  usage, so that is billed too: a session overspends by at most the response
  in flight.  A ``response.create`` sent after that point is not forwarded.
  Deltas may take the relay's lanes: the stage watches them (a check, no
  action) and, once over the quota, sends them back through the full path
  (``s.rechain()``), where the next one -- or the next tick -- stops the
  session.
* **Maximum duration** and **idle timeout** (no client event, and no response
  in flight, for that long): an ``error`` naming the limit, then close 1008.
* **Ended from the store** (``ops.end_session``, a revoked or expired token):
  the ledger's refresh flags the session's :class:`~openopen8.ledger.Grant`;
  the next tick cancels the responses in flight (their usage is settled) and
  closes with an ``error`` (``session_ended``, ``token_revoked``,
  ``token_expired``) and 1008.

Checks are a few attribute reads; the stage has no I/O.
"""

from __future__ import annotations

import time

from ..billing import usd_text
from ..events import Event, error_event
from ..relay.stage import Forward, Session
from ..store.base import TokenLimits
from .metering import MeteringStage

POLICY = 1008
TRY_AGAIN = 1013

#: server events after which the quota is looked at again
_QUOTA_EVENTS = frozenset({"response.created", "response.done", "response.output_audio.delta",
                           "response.audio.delta", "response.output_text.delta",
                           "response.text.delta", "response.output_audio_transcript.delta",
                           "response.audio_transcript.delta",
                           "conversation.item.input_audio_transcription.completed"})


#: the ones of them that stream (one per chunk of output): watched on lanes
_DELTAS = frozenset(t for t in _QUOTA_EVENTS if t.endswith(".delta"))


#: why a session was ended from the store -> (error code, message)
_ENDED = {
    "session_ended": ("session_ended", "An administrator of the gateway ended this session."),
    "token_revoked": ("token_revoked", "This gateway token has been revoked; the session ends."),
    "token_expired": ("token_expired", "This gateway token has expired; the session ends."),
}


def _seconds(v: float) -> str:
    return f"{v:g} s"


class LimitsStage:
    name = "limits"

    def __init__(self, meter: MeteringStage, limits: TokenLimits, balance,
                 grant=None) -> None:
        self.meter = meter
        self.limits = limits
        self.balance = balance          # TokenBalance, or None (not metered)
        self.grant = grant              # ledger.Grant: its ``end`` ends the session
        self.started = time.monotonic()
        self.last_done = self.started
        self.stopping = False
        self._quota_seen = self._has_quota()
        self._over = False               # a watched delta found the quota used up
        self._s: Session | None = None

    def _has_quota(self) -> bool:
        bal = self.balance
        return bal is not None and bal.quota_nanos is not None

    def on_open(self, s: Session) -> None:
        self.started = self.last_done = time.monotonic()
        self._s = s

    # ---- events ----------------------------------------------------------------------

    def on_client(self, ev: Event, s: Session) -> Forward:
        if self.stopping:
            return None
        if ev.type == "response.create" and self.balance is not None and self.balance.exhausted():
            self._out_of_quota(s)
            return None
        return ev

    def on_server(self, ev: Event, s: Session) -> Forward:
        t = ev.type
        if t == "response.done":
            self.last_done = time.monotonic()
        if t in _QUOTA_EVENTS and not self.stopping:
            self._check_quota(s)
        return ev

    def sees_client(self, t: str | None, s: Session) -> bool:
        return self.stopping or t == "response.create"

    def sees_server(self, t: str | None, s: Session) -> bool:
        # without a quota only response.done matters (the idle clock); a
        # quota set while the session runs is noticed by the next tick
        return t == "response.done" or (t in _QUOTA_EVENTS and self._quota_seen)

    def watch_server(self, t: str, s: Session):
        if t in _DELTAS and not (self._over or self.stopping):
            return self._watch_delta
        return None

    def _watch_delta(self, data: bytes) -> None:
        # _over_quota, inlined: this runs per delta
        bal = self.balance
        quota = bal.quota_nanos
        if quota is None:
            return
        left = quota - bal.spent_nanos - bal.pending_nanos
        if left <= 0 or (self.meter.inflight and left <= self.meter.estimate_nanos()):
            self._over = True
            self._s.rechain()  # type: ignore[union-attr] - the full path acts on the next

    def on_tick(self, now: float, s: Session) -> None:
        if self.stopping:
            return
        grant = self.grant
        if grant is not None and grant.end is not None:
            self._ended(s, grant.end)
            return
        if self._has_quota() != self._quota_seen:
            self._quota_seen = not self._quota_seen
            s.rechain()
        lim = self.limits
        if lim.max_duration is not None and now - self.started >= lim.max_duration:
            self._stop(s, POLICY, "max_duration", "max_duration_exceeded",
                       f"The session reached its maximum duration of "
                       f"{_seconds(lim.max_duration)} (max_duration).")
        elif (lim.idle_timeout is not None and not self.meter.inflight
              and now - max(s.last_client_activity, self.last_done) >= lim.idle_timeout):
            self._stop(s, POLICY, "idle_timeout", "idle_timeout",
                       f"No client activity for {_seconds(lim.idle_timeout)} (idle_timeout).")
        else:
            self._check_quota(s)

    # ---- quota -----------------------------------------------------------------------

    def _check_quota(self, s: Session) -> None:
        if self._over_quota():
            self._out_of_quota(s)

    def _over_quota(self) -> bool:
        bal = self.balance
        if bal is None or bal.quota_nanos is None:
            return False
        left = bal.remaining()
        return left <= 0 or bool(self.meter.inflight and left - self.meter.estimate_nanos() <= 0)

    def _out_of_quota(self, s: Session) -> None:
        self.meter.cancel_inflight(s)
        quota = self.balance.quota_nanos or 0
        self._stop(s, TRY_AGAIN, "insufficient_quota", "insufficient_quota",
                   f"This gateway token has used up its quota (USD {usd_text(quota)}); "
                   "the session ends.", type="insufficient_quota")

    def _ended(self, s: Session, why: str) -> None:
        self.meter.cancel_inflight(s)
        code, message = _ENDED.get(why, _ENDED["session_ended"])
        self._stop(s, POLICY, why, code, message)

    def _stop(self, s: Session, close: int, reason: str, code: str, message: str,
              type: str = "invalid_request_error") -> None:
        self.stopping = True
        s.rechain()                   # from now on every client event is dropped here
        s.reply(error_event(message, code=code, type=type))
        s.close(close, reason)
