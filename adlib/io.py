"""Small I/O helpers: atomic writes, so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename durable too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - Windows, or file systems without directory fsync
        pass
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON-dump ``obj`` (indented, keys sorted) atomically to ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True):
    """Hold an exclusive lock on ``path`` (created if missing; ``flock``) for the ``with`` block:
    processes that share a file (two notebooks executed side by side, two batch runs on one
    store) take turns. The lock goes with the process, so a killed one leaves none behind. Where
    ``fcntl`` does not exist (Windows) there is no lock. ``blocking=False``: raise
    :class:`BlockingIOError` at once when another holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
