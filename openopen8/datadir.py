"""Files the gateway keeps in its data directory (``secret.key``,
``gateway.id``, the SQLite database): made readable by their owner only, and
safe when two processes start at once (``O_EXCL``: the second reads what the
first wrote)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def create_private(path: Path) -> int | None:
    """Create ``path`` readable by its owner only (0600; its directory 0700
    if new) and return its descriptor, open for writing -- or None when the
    file exists already (it keeps the mode it has)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None


def kept_value(path: Path, make: Callable[[], str]) -> str:
    """The value in ``path``; made with ``make()`` and written 0600 (its
    directory 0700 if new) when the file is missing or empty."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = make()
    fd = create_private(path)
    if fd is None:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
