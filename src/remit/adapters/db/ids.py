"""Identifiers: a short type prefix and 20 random hex digits (``cus_9f2c…``), readable in logs and URLs.

The random digits are drawn from ``os.urandom`` a few thousand ids at a time: one system call per id cost a
little, and, more, it let go of the GIL, so a thread making ids for a batch of events handed the interpreter to
another thread and waited to get it back, once per id. Ids are not secrets (API key secrets come from
``secrets``); a forked child draws its own.
"""

from __future__ import annotations

import os
import threading

_REFILL = 4096
_lock = threading.Lock()
_pool: list[str] = []
_pid = 0


def _refill() -> None:
    global _pid
    digits = os.urandom(10 * _REFILL).hex()
    _pool[:] = [digits[i : i + 20] for i in range(0, len(digits), 20)]
    _pid = os.getpid()


def new_id(prefix: str) -> str:
    with _lock:
        if not _pool or _pid != os.getpid():
            _refill()
        return f"{prefix}_{_pool.pop()}"


def new_ids(prefix: str, n: int) -> list[str]:
    """``n`` new ids at once."""
    if n > _REFILL:
        digits = os.urandom(10 * n).hex()
        return [f"{prefix}_{digits[i : i + 20]}" for i in range(0, len(digits), 20)]
    with _lock:
        if len(_pool) < n or _pid != os.getpid():
            _refill()
        taken = _pool[-n:] if n else []
        del _pool[len(_pool) - n :]
    return [f"{prefix}_{d}" for d in taken]
