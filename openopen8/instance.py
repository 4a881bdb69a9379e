"""Who this gateway process is, for the session rows it writes.

A session row names the instance running it.  The instance is
``<gateway id>:<nonce>``: the gateway id is made once per data directory
(``<data dir>/gateway.id``) and the nonce once per process.  At start-up a
gateway that holds its data directory's lock (``gateway.lock``, an ``flock``
the kernel drops when the process dies, however it dies) knows no earlier
process of it still runs, so every row of ``<gateway id>:*`` still open was
left by a crash and is closed then (``closed_by = 'crash'``).  Without the
lock -- another ``serve`` on the same data directory -- nothing is closed at
start-up; rows of any dead instance are closed anyway once their lease has
run out (the ledger's writer, every ``lease_seconds / 3``).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import IO

from .datadir import kept_value

log = logging.getLogger("openopen8")


class Instance:
    def __init__(self, gateway_id: str, lock: IO[bytes] | None) -> None:
        self.gateway_id = gateway_id
        self.name = f"{gateway_id}:{secrets.token_hex(4)}"
        self._lock = lock

    @property
    def sole(self) -> bool:
        """True when no other process serves this data directory."""
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @classmethod
    def of(cls, data_dir: Path) -> "Instance":
        # kept_value makes the data dir too, when it is new
        gateway_id = kept_value(data_dir / "gateway.id", lambda: "gw_" + secrets.token_hex(8))
        return cls(gateway_id, _lock(data_dir / "gateway.lock"))


def _lock(path: Path) -> IO[bytes] | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no start-up sweep
        return None
    f = open(path, "ab")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        log.info("another gateway process serves %s: rows it left open by a crash are closed "
                 "when their lease runs out", path.parent)
        return None
    return f
