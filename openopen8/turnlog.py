"""The session log's writer: turns from the transcript stages
(stages/transcripts.py), written in batches by one task so a session never
waits on the database; and the retention cleanup (``log_retention_days``).

``add`` only appends to a list (the relay's thread of control); the task
writes what gathered every ``flush_seconds``, and deletes turns older than
the retention once an hour.  A failed write is logged and retried with the
next batch, up to ``max_pending`` turns (past that the oldest are dropped, with
a warning: the log is a convenience, the ledger is what bills)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from .store.base import utcnow
from .store.console_sql import Turn

log = logging.getLogger("openopen8.turnlog")


class TurnLog:
    def __init__(self, store: Any, *, flush_seconds: float = 1.0, retention_days: float = 30.0,
                 cleanup_seconds: float = 3600.0, max_pending: int = 100_000) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.retention_days = retention_days
        self.cleanup_seconds = cleanup_seconds
        self.max_pending = max_pending
        self._pending: list[Turn] = []
        self._task: asyncio.Task | None = None
        self._last_cleanup = 0.0

    def add(self, turns: list[Turn]) -> None:
        self._pending.extend(turns)
        if len(self._pending) > self.max_pending:
            dropped = len(self._pending) - self.max_pending
            del self._pending[:dropped]
            log.warning("session log: %d turns dropped (the database is not keeping up)",
                        dropped)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.store.write_turns(batch)
        except Exception as exc:  # noqa: BLE001 - kept for the next try
            log.warning("session log: writing %d turns failed (%s); retrying", len(batch),
                        type(exc).__name__)
            self._pending[:0] = batch

    async def cleanup(self) -> int:
        if not self.retention_days:
            return 0
        n = await self.store.delete_turns_before(utcnow() - timedelta(days=self.retention_days))
        if n:
            log.info("session log: deleted %d turns older than %g days", n, self.retention_days)
        return n

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()
            if loop.time() - self._last_cleanup >= self.cleanup_seconds:
                self._last_cleanup = loop.time()
                try:
                    await self.cleanup()
                except Exception as exc:  # noqa: BLE001
                    log.warning("session log: cleanup failed (%s)", type(exc).__name__)
