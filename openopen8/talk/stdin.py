"""Lines from standard input, read on a daemon thread.

``asyncio.to_thread(input)`` would leave a thread blocked in ``read`` that
``asyncio.run`` waits for at exit, so Ctrl-C at a prompt would hang until
Enter.  A daemon thread dies with the process instead."""

from __future__ import annotations

import asyncio
import sys
import threading


class StdinLines:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="talk-stdin", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in sys.stdin:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line.rstrip("\r\n"))
        except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop is gone
            pass
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        except RuntimeError:
            pass

    async def line(self) -> str | None:
        """The next line, or None at end of input."""
        return await self._queue.get()
