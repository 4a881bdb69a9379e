"""The ledger: the one owner of metering's mutable state.

Stages have no I/O, so metering works as a hand-over:

* at connect, :meth:`Ledger.admit` records the session in the database and
  checks the token's quota, concurrency and rate limits in the same
  transaction (``store.open_session``); it hands the session a
  :class:`Grant`: the token's limits and its :class:`TokenBalance`;
* while the session runs, the metering stage calls :meth:`Ledger.record` with
  each priced usage row.  That is synchronous and cheap: the row joins a
  queue and its cost is added to the balance's ``pending_nanos`` at once, so
  every session of the token sees it on its next event;
* a writer task owned by the Ledger commits what is queued at most
  ``commit_seconds`` (0.05) after it was recorded -- a group commit: the rows
  and session ends of every session that came in meanwhile share one
  transaction, so a busy gateway commits at most 1/``commit_seconds`` times a
  second however many responses end.  The ledger rows, the tokens' ``spent =
  spent + cost`` and the session ends go in **one transaction**.  The spend
  as committed comes back and replaces ``spent_nanos``; the written rows leave
  ``pending_nanos``.  So a crash (SIGKILL, power cut of the process) loses at
  most the usage recorded in the last ``commit_seconds`` plus one commit's
  time -- it lost up to ``flush_seconds`` (1 s) when rows were only written
  on the periodic flush.  A commit costs ~1.6 ms of CPU on SQLite (and
  ~1 ms on PostgreSQL) on the development VM, once per response at low rates;
  ``bench/relay.py --turn-every N`` measures it beside the periodic flush;
* the same task renews the leases of this instance's sessions and re-reads
  the spend of tokens in use every ``refresh_seconds``, so spending by other
  gateway instances (and quota changes from the CLI) reach running sessions;
  with it, the store says which of this instance's sessions must end (an
  operator's ``end_requested``, a revoked or expired token): their
  :class:`Grant` is flagged and the limits stage ends them at its next tick.

A :class:`TokenBalance` is shared by all of a token's sessions in this
process.  Only Ledger methods change it, each without awaiting in between,
on the one event loop: one owner, no locks.  The database holds the truth
(``tokens.spent_nanos``); a balance is that plus what this process has not
written yet.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .billing import PriceTable, usd_text
from .errors import AuthError, GatewayError, LimitError
from .metrics import usage_recorded
from .relay.stage import Session
from .store.base import LimitReached, SessionEnd, TokenLimits, UsageRow, utcnow

log = logging.getLogger("openopen8.ledger")


@dataclass
class TokenBalance:
    token_id: int
    quota_nanos: int | None
    spent_nanos: int            # as committed in the database, last we saw
    pending_nanos: int = 0      # recorded here, not yet committed
    sessions: int = 0           # sessions of this process using it

    def remaining(self) -> int | None:
        if self.quota_nanos is None:
            return None
        return self.quota_nanos - self.spent_nanos - self.pending_nanos

    def exhausted(self) -> bool:
        r = self.remaining()
        return r is not None and r <= 0


@dataclass
class Grant:
    """What a session was admitted with."""

    limits: TokenLimits
    balance: TokenBalance
    #: set by the ledger's refresh when the session must end (an operator asked,
    #: its token was revoked or expired): the limits stage ends it on its next tick
    end: str | None = None


def quota_error(quota_nanos: int | None) -> LimitError:
    amount = f" (USD {usd_text(quota_nanos)})" if quota_nanos is not None else ""
    return LimitError(f"This gateway token has used up its quota{amount}. Ask the gateway's "
                      "administrator to raise it.", code="insufficient_quota",
                      type="insufficient_quota")


def _refusal(exc: LimitReached) -> GatewayError:
    if exc.limit == "secret_uses":
        return AuthError("This client secret has already been used (it was minted with "
                         "max_uses). Ask your backend for a new one.", code="client_secret_used")
    if exc.limit == "quota_nanos":
        return quota_error(exc.value)
    if exc.limit == "max_sessions":
        return LimitError(f"This gateway token already has {exc.value} session"
                          f"{'s' if exc.value != 1 else ''} open, its limit (max_sessions). "
                          "Close one and retry.", code="too_many_sessions")
    return LimitError(f"This gateway token may open {exc.value} session"
                      f"{'s' if exc.value != 1 else ''} per minute (sessions_per_minute). "
                      "Retry in a minute.", code="rate_limit_exceeded")


class Ledger:
    def __init__(self, store: Any, prices: PriceTable, *, flush_seconds: float = 1.0,
                 lease_seconds: float = 30.0, refresh_seconds: float = 2.0,
                 batch: int = 200, commit_seconds: float = 0.05,
                 instance: str | None = None) -> None:
        self.store = store
        self.prices = prices
        self.flush_seconds = flush_seconds
        self.commit_seconds = commit_seconds
        self.lease_seconds = lease_seconds
        self.refresh_seconds = refresh_seconds
        self.batch = batch
        self.instance = instance or "gw_" + secrets.token_hex(8)
        self._rows: list[UsageRow] = []
        self._ends: list[SessionEnd] = []
        self._channels: dict[str, str] = {}
        self._balances: dict[int, TokenBalance] = {}
        #: the sessions this instance runs (their leases are renewed) and their
        #: grants (an end is flagged there)
        self._grants: dict[str, Grant] = {}
        self._wake = asyncio.Event()
        #: something was queued: the writer commits it within commit_seconds
        self._queued = False
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop the writer and write what is left (server shutdown).  The
        writer is asked to stop, not cancelled: a cancelled flush would lose
        the batch it holds."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.gather(task, return_exceptions=True)
        if not await self.flush():
            log.error("ledger: %d usage rows and %d session ends could not be written",
                      len(self._rows), len(self._ends))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.flush_seconds
        next_lease = loop.time() + self.lease_seconds / 3
        next_refresh = loop.time() + self.refresh_seconds
        commit_at: float | None = None    # when what is queued gets committed
        while not self._stopping:
            deadline = min(next_flush, next_lease, next_refresh)
            if commit_at is not None:
                deadline = min(deadline, commit_at)
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._stopping:
                return
            now = loop.time()
            if self._wake.is_set():
                self._wake.clear()
                if self._queued and commit_at is None:
                    # the first row since the last commit: the others that
                    # come within commit_seconds join its transaction
                    commit_at = now + self.commit_seconds
                if len(self._rows) >= self.batch:
                    commit_at = now
            if now >= next_flush or (commit_at is not None and now >= commit_at):
                commit_at = None
                self._queued = False          # what is recorded from now on wakes us again
                next_flush = now + self.flush_seconds
                if not await self.flush():
                    self._queued = True       # the database refused: retry at the next flush
            try:
                if now >= next_lease:
                    next_lease = now + self.lease_seconds / 3
                    if self._grants:
                        await self.store.renew_leases(list(self._grants), self._lease_until())
                    # sessions whose instance stopped renewing a lease ago died with it
                    await self.store.close_orphans(
                        expired_before=utcnow() - timedelta(seconds=self.lease_seconds))
                if now >= next_refresh:
                    next_refresh = now + self.refresh_seconds
                    await self._refresh()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the writer
                log.exception("ledger: lease renewal or balance refresh failed")

    def _lease_until(self):
        return utcnow() + timedelta(seconds=self.lease_seconds)

    # ---- admission ---------------------------------------------------------------

    async def admit(self, s: Session) -> Grant:
        """Record the session and check the token's limits, atomically in the
        database; raise :class:`LimitError` (429) when a limit is reached."""
        token_id = s.token.id
        bal = self._balances.get(token_id)
        try:
            limits, spent = await self.store.open_session(
                s.id, token_id, s.model, self.instance, self._lease_until(),
                pending_nanos=bal.pending_nanos if bal else 0,
                details=s.facts.get("row"))
        except LimitReached as exc:
            raise _refusal(exc) from None
        bal = self._balances.get(token_id)
        if bal is None:
            bal = self._balances[token_id] = TokenBalance(token_id, limits.quota_nanos, spent)
        else:
            bal.quota_nanos = limits.quota_nanos
            bal.spent_nanos = max(bal.spent_nanos, spent)   # spend only grows
        bal.sessions += 1
        grant = self._grants[s.id] = Grant(limits, bal)
        return grant

    async def abandon(self, s: Session) -> None:
        """The session never started (no upstream): forget its row."""
        self._grants.pop(s.id, None)
        self._release(s.token.id)
        try:
            await self.store.drop_session(s.id)
        except Exception:  # noqa: BLE001 - the lease runs out anyway
            log.exception("ledger: could not drop session %s", s.id)

    def _release(self, token_id: int) -> None:
        bal = self._balances.get(token_id)
        if bal is not None:
            bal.sessions -= 1
            self._forget_idle(bal)

    def _forget_idle(self, bal: TokenBalance) -> None:
        if bal.sessions <= 0 and bal.pending_nanos <= 0:
            self._balances.pop(bal.token_id, None)

    # ---- the sink stages write to (synchronous, never blocks) ----------------------

    def record(self, row: UsageRow) -> None:
        self._rows.append(row)
        usage_recorded(row)
        bal = self._balances.get(row.token_id)
        if bal is not None:
            bal.pending_nanos += row.cost_nanos
        self._queue()

    def _queue(self) -> None:
        if not self._queued or len(self._rows) >= self.batch:
            self._queued = True
            self._wake.set()

    def opened(self, session_id: str, channel: str | None) -> None:
        if channel:
            self._channels[session_id] = channel

    def closed(self, end: SessionEnd, token_id: int) -> None:
        self._grants.pop(end.id, None)
        self._ends.append(end)
        self._release(token_id)
        self._queue()

    # ---- the writer ------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write what is queued; False if the database refused (kept for the next try)."""
        async with self._flush_lock:
            rows, ends, channels = self._rows, self._ends, self._channels
            if not (rows or ends or channels):
                return True
            self._rows, self._ends, self._channels = [], [], {}
            try:
                balances = await self.store.write_ledger(rows, ends, channels)
            except Exception:  # noqa: BLE001
                log.exception("ledger: writing %d rows and %d session ends failed", len(rows),
                              len(ends))
                if len(rows) + len(ends) < 2:
                    return self._keep(rows, ends, channels)
                return await self._write_apart(rows, ends, channels)
            self._written(rows, balances)
            return True

    def _written(self, rows: list[UsageRow], balances: list) -> None:
        for r in rows:
            bal = self._balances.get(r.token_id)
            if bal is not None:
                bal.pending_nanos -= r.cost_nanos
        self._apply(balances)

    def _keep(self, rows: list[UsageRow], ends: list[SessionEnd],
              channels: dict[str, str]) -> bool:
        """Put back what could not be written, for the next flush."""
        self._rows[:0], self._ends[:0] = rows, ends
        self._channels = {**channels, **self._channels}
        return False

    async def _write_apart(self, rows: list[UsageRow], ends: list[SessionEnd],
                           channels: dict[str, str]) -> bool:
        """A batch failed: write each row and session end on its own, so that
        one the database refuses cannot hold back every other session's.
        When the database takes some of them it is up, so the ones it still
        refuses never will be written: they are dropped, each with an ERROR
        line naming it (session, kind, ref, model, cost -- no secret).  When
        it takes none, it is down: everything is kept for the next flush."""
        pending = channels           # written with the first write that succeeds

        async def alone(rows: list[UsageRow], ends: list[SessionEnd]) -> bool:
            nonlocal pending
            try:
                balances = await self.store.write_ledger(rows, ends, pending)
            except Exception:  # noqa: BLE001
                return False
            pending = {}
            self._written(rows, balances)
            return True

        failed_rows = [r for r in rows if not await alone([r], [])]
        failed_ends = [e for e in ends if not await alone([], [e])]
        if len(failed_rows) + len(failed_ends) == len(rows) + len(ends):
            return self._keep(failed_rows, failed_ends, channels)
        for r in failed_rows:
            log.error("ledger: dropped a usage row the database refuses: session=%s kind=%s "
                      "ref=%.80r model=%.80r cost_nanos=%d", r.session_id, r.kind, r.ref, r.model,
                      r.cost_nanos)
            bal = self._balances.get(r.token_id)
            if bal is not None:
                bal.pending_nanos -= r.cost_nanos
        for e in failed_ends:
            log.error("ledger: dropped the end of session %s, which the database refuses", e.id)
        return True

    async def _refresh(self) -> None:
        async with self._flush_lock:
            self._apply(await self.store.balances(list(self._balances)))
        if self._grants:
            # ended from the store (ops.end_session, a revoked or expired token),
            # on whichever instance: flagged here, acted on by the limits stage
            for sid, why in (await self.store.sessions_to_end(self.instance)).items():
                grant = self._grants.get(sid)
                if grant is not None and grant.end is None:
                    grant.end = why

    def _apply(self, balances: list) -> None:
        for b in balances:
            bal = self._balances.get(b.token_id)
            if bal is not None:
                bal.spent_nanos, bal.quota_nanos = b.spent_nanos, b.quota_nanos
                self._forget_idle(bal)
