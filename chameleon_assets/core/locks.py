"""Inter-process locks on files (``fcntl.flock``): one writer per artefact, one CLI at a time.

A lock file holds its holder's pid and what it is doing, so whoever waits can say for
whom. The operating system releases a lock when its process dies, however it dies, so
a killed run never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator


class LockBusy(RuntimeError):
    """The lock is held by another process and the caller chose not to wait."""


def holder(path: Path) -> str:
    """What the lock file says about its current (or last) holder."""
    try:
        return Path(path).read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def file_lock(
    path: Path, what: str, wait: bool = True, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block.

    If another process holds it: with ``wait``, call ``on_wait(holder)`` once and block
    until it is released; without, raise LockBusy naming the holder. ``what`` (with this
    pid) is written into the file for the next waiter to read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(path)
            if not wait:
                raise LockBusy(f"{who} holds {path}") from None
            if on_wait is not None:
                on_wait(who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
